"""The kernel variants of this package, found by module discovery, and the per-node selection.

Every module of ``edgekit.backends.cortexm.kernels`` except this one, ``base`` and ``common``
lists its variants in ``VARIANTS``; a name registered twice is refused with both modules
named. Selection asks them by decreasing priority (docs/kernels.md)."""
from __future__ import annotations

import importlib
import pkgutil

from ....errors import EdgekitError
from .base import DEFAULT_OPTIMIZE, Fallback, KernelVariant, Selection

#: int16 weights may take at most this share of the board's flash (else the reference kernel),
#: and must leave the model's int8 weights plus this margin (code, runtime) free.
FLASH_SHARE = 0.5
FLASH_MARGIN = 64 * 1024
#: --optimize balanced: int16 weights may add at most this share of the model's int8 parameter
#: bytes to the flash (issue 16's default flash goal: 1.05x the parameters plus the code)
BALANCED_EXTRA_FLASH = 0.05
#: issue 16's default flash goal: the whole firmware (.text + .rodata + .data) within this many times
#: the model's int8 parameter bytes plus this many bytes for all code, tables and runtime. Balanced
#: builds narrow their int16 weights until the firmware meets it (backends/cortexm/build.py).
FLASH_GOAL_PARAMS = 1.05
FLASH_GOAL_CODE = 24 * 1024
#: Stack bytes an optimized kernel may take for its scratch buffers when no arena gap fits.
STACK_SCRATCH_LIMIT = 8192
#: How a missing core feature is named in the reason for the reference kernel.
FEATURE_NAMES = {"dsp": "the DSP extension", "mve": "Helium (MVE)"}
REFERENCE = "reference"
_NOT_VARIANTS = ("base", "common", "registry")


class Registry:
    """Kernel variants by name; refuses a second variant of the same name, or of a latency-model
    kind another variant declares."""

    def __init__(self):
        self._variants: dict[str, KernelVariant] = {}
        self._origin: dict[str, str] = {}

    def add(self, variant: KernelVariant, origin: str) -> None:
        if not variant.name:
            raise EdgekitError(f"kernel variant {type(variant).__name__} in {origin} has no name")
        if variant.name in self._variants:
            raise EdgekitError(f"kernel variant '{variant.name}' is registered twice: in "
                               f"{self._origin[variant.name]} and in {origin}")
        for kind in variant.cost_kinds:  # the latency model keys its coefficients by kind
            other = next((v for v in self._variants.values() if kind in v.cost_kinds), None)
            if other is not None:
                raise EdgekitError(f"latency-model kind '{kind}' of kernel variant '{variant.name}' ({origin}) is "
                                   f"also declared by '{other.name}' ({self._origin[other.name]})")
        self._variants[variant.name] = variant
        self._origin[variant.name] = origin

    def get(self, name: str) -> KernelVariant | None:
        return self._variants.get(name)

    def origin(self, name: str) -> str:
        return self._origin[name]

    def by_priority(self) -> list[KernelVariant]:
        """Optimized variants, highest priority first (the reference is the fallback)."""
        return sorted((v for v in self._variants.values() if v.name != REFERENCE),
                      key=lambda v: (-v.priority, v.name))

    def all(self) -> list[KernelVariant]:
        return list(self._variants.values())

    def select(self, node, graph, plan, features, kernels: str, optimize: str = DEFAULT_OPTIMIZE) -> Selection:
        """The kernel for one node: the first optimized variant offered under ``optimize``, by
        priority, that claims the node, runs on the core and does not refuse it; else the
        reference kernel, with the reason of the last variant that claimed the node."""
        if kernels == REFERENCE:
            return Selection(REFERENCE, reason="--kernels reference")
        have = set(features)
        claiming = [v for v in self.by_priority() if optimize in v.modes and node.op in v.ops and v.claims(node)
                    and v.applies(node, graph)]
        runnable = [v for v in claiming if v.features <= have]
        if claiming and not runnable:
            missing = sorted(claiming[-1].features - have)
            return Selection(REFERENCE, reason="core without " + " and ".join(FEATURE_NAMES.get(f, f)
                                                                              for f in missing))
        reason, lost = "", None
        for v in runnable:
            why = v.refusal(node, graph, plan)
            if why is None:
                sel = v.select(node, graph, plan)
                if lost and sel.optimized and not sel.ctx.get("fallback"):
                    # no silent degradation: a faster variant written for the layer refused it (base.Fallback)
                    sel.ctx["fallback"] = lost
                    sel.ctx["summary"] = f"{sel.ctx.get('summary', '')} ({lost})".lstrip()
                return sel
            reason = why
            if lost is None and (v.refusals_are_fallbacks or isinstance(why, Fallback)):
                lost = f"not {v.name}: {why}"
        return Selection(REFERENCE, reason=reason)


def discover(package: str = __package__) -> Registry:
    """A registry of the ``VARIANTS`` of every module in ``package``."""
    reg = Registry()
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name in _NOT_VARIANTS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for v in getattr(module, "VARIANTS", ()):
            reg.add(v, module.__name__)
    if reg.get(REFERENCE) is None:
        raise EdgekitError(f"{package} has no '{REFERENCE}' kernel variant")
    return reg


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The registry of this package's variants (discovered once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = discover()
    return _REGISTRY


def arena_gap(plan, node_index: int, size: int) -> int | None:
    """Offset of ``size`` free arena bytes while node ``node_index`` runs (no live tensor
    there), or None. Kernels put their scratch buffers there instead of on the stack."""
    if size <= 0:
        return None
    reserved = getattr(plan, "scratch", {}).get(node_index)  # the planner kept bytes for this node's scratch
    if reserved and reserved[1] >= size:
        return reserved[0]
    busy = sorted((p.offset, p.offset + p.size) for p in plan.placements.values()
                  if p.buffer == "arena" and p.first <= node_index <= p.last)
    pos = 0
    for lo, hi in busy:
        if lo - pos >= size:
            return pos
        pos = max(pos, (hi + 3) // 4 * 4)
    if plan.arena_bytes - pos >= size:
        return pos
    return None


def int8_parameter_bytes(graph) -> int:
    """The model's parameters as TFLite stores them: int8 weights (one byte per weight of at most 8 bits)
    and int32 biases of the layers with weights."""
    from ....ir.operators import get_op

    names = {t for n in graph.nodes if get_op(n.op, n.name).packs_weights for t in n.inputs[1:3]
             if t in graph.constants}
    return int(sum(graph.constants[t].size * (1 if graph.tensors[t].bits <= 8 else 4) for t in names))


def flash_goal_bytes(graph) -> int:
    """The default (balanced) whole-firmware flash goal of ``graph``: FLASH_GOAL_PARAMS x its int8
    parameter bytes + FLASH_GOAL_CODE."""
    return int(FLASH_GOAL_PARAMS * int8_parameter_bytes(graph)) + FLASH_GOAL_CODE
