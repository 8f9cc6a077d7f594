"""What a kernel variant is: the interface every module of this package implements, and the
:class:`Selection` the code generator receives for each node."""
from __future__ import annotations

from dataclasses import dataclass, field


#: ``edgekit build --optimize``: what the kernel selection favours (docs/kernels.md)
OPTIMIZE = ("size", "balanced", "speed")
DEFAULT_OPTIMIZE = "balanced"


class Fallback(str):
    """A refusal that sends a layer the variant is written for to a slower kernel: for lack of flash, stack or
    RAM, or because an accumulator bound or the shape keeps the faster form from it (issue 16: no silent
    degradation). When a lower variant takes the layer, the registry records the first such refusal in the
    selection's ``ctx["fallback"]``, and the build lists it (codegen.kernel_fallbacks: the build line,
    ``edgekit report``, the manifest). A plain ``str`` refusal says the layer is of another kind, or that
    the variant would not be faster there."""


@dataclass
class Selection:
    """The kernel chosen for one node."""

    kind: str                      # the variant's name ("conv2d_gemm", "dw3", ..., or "reference")
    template: str | None = None    # under templates/cortexm/ (ops_dsp/..., ops_mve/...)
    reason: str = ""               # why the reference kernel (kind == "reference")
    ctx: dict = field(default_factory=dict)
    weight_bytes: int = 0          # flash bytes of the re-laid weights
    scratch: int | None = None     # arena offset of the kernel's scratch buffer (None: on the stack)
    # portable C (no core feature): emitted for every build, not under EK_USE_DSP with the
    # reference kernel beside it, so the host runner and every core run it
    portable: bool = False

    @property
    def optimized(self) -> bool:
        return self.kind != "reference"

    def describe(self) -> str:
        if not self.optimized:
            return f"reference ({self.reason})" if self.reason else "reference"
        return f"optimized {self.kind}: {self.ctx.get('summary', '')}".rstrip(": ")


class KernelVariant:
    """One way of emitting C for some nodes. A module of this package lists its variants in
    ``VARIANTS``; the registry (``registry.py``) tries them by decreasing ``priority``.

    Selection: a variant is asked about a node when the build asks for optimized kernels,
    the build's ``--optimize`` objective is in ``modes``, ``node.op`` is in ``ops``, :meth:`claims` and
    :meth:`applies` are true and the core has every feature in
    ``features``; :meth:`refusal` then says why it cannot take that node (None: it can),
    and :meth:`select` lays the weights out (the bytes it stores in flash) and fills the
    template's context. The refusal of the last variant that claimed the node becomes the
    reason recorded for the reference kernel.

    Latency model (``edgekit/nas/cost.py``): ``cost_kinds`` names the kinds of layer the
    variant's features describe and the features of each; :meth:`cost_features` computes them
    from a layer description (``cost.layer_info``: shapes, kernel, stride, padding), so that the
    model never copies a kernel's loop structure.
    """

    name: str = ""
    ops: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()
    priority: int = 0
    template: str | None = None
    #: its template computes a range of output pixels over rings of rows (row fusion, ir/planner.py)
    row_ranges: bool = False
    #: the ``--optimize`` objectives (OPTIMIZE) under which the variant is offered
    modes: frozenset[str] = frozenset({"size", "balanced", "speed"})
    #: every refusal of a layer the variant applies to is a :class:`Fallback` (packed 4-/2-bit weights: a layer
    #: they refuse loses its packing, whatever the reason)
    refusals_are_fallbacks: bool = False
    #: kind -> feature names (the columns of the linear model)
    cost_kinds: dict[str, tuple[str, ...]] = {}
    #: kind -> the features kept when a kind has too few calibration layers for all of them
    cost_reduced: dict[str, tuple[str, ...]] = {}
    #: kind -> (feature, MACs per count) tried in order: the layer's innermost work, for the
    #: latency model's fallback kind
    cost_work: dict[str, tuple[tuple[str, int], ...]] = {}

    def claims(self, node) -> bool:
        """Whether the node is of the kind this variant is written for (e.g. depthwise or not)."""
        return True

    def applies(self, node, graph) -> bool:
        """Whether the layer's tensors are of the kind the variant is written for (e.g. binary weights):
        unlike a refusal, a layer it does not apply to is no fallback."""
        return True

    def refusal(self, node, graph, plan) -> str | None:
        """Why this variant cannot take ``node`` (None: it can); a :class:`Fallback` where the layer then
        runs a slower kernel for lack of memory, an accumulator bound or its shape."""
        return None

    def select(self, node, graph, plan) -> Selection:
        """The weight layout and template context for a node :meth:`refusal` accepted."""
        raise NotImplementedError

    def flash_bytes(self, sel: Selection, node, graph) -> int:
        """Flash bytes the selection adds to the model's (what the board's budget is charged)."""
        return sel.weight_bytes

    def instructions_saved_by_int16(self, sel: Selection) -> int:
        """Instructions per inference the int16-weight variant of the same layer would save (0:
        none, or the weights are int16 already): what ``--optimize balanced`` spends flash on."""
        return 0

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """(kind, features) of a layer this variant runs, from ``cost.layer_info``'s description."""
        raise NotImplementedError

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        """What splits ``kind`` into sub-kinds with their own coefficients (most general first):
        the properties of a layer that change the code this variant runs."""
        return []


def format_fallbacks(fallbacks: list[dict] | None, limit: int = 4) -> str:
    """``N layer(s) on a slower kernel: name (kernel: reason), ...`` or "" (the build line, the report)."""
    if not fallbacks:
        return ""
    shown = ", ".join(f"{f['layer']} ({f['kernel']}: {f['reason']})" for f in fallbacks[:limit])
    more = f", and {len(fallbacks) - limit} more (manifest.json kernel_fallbacks)" if len(fallbacks) > limit else ""
    return f"{len(fallbacks)} layer(s) on a slower kernel: {shown}{more}"
