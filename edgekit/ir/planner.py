"""Static memory planner: places every intermediate activation in one arena.

1. Lifetimes come from the node schedule (producer index .. last consumer index).
2. Buffers are shared where that is provably safe:
   * reshapes alias their input (same bytes, new shape);
   * elementwise ops (``Op.inplace_inputs``: relu, requantize, lut, add, softmax, and a
     convolution's fused residual input) write output element i only after reading
     input element i, walking upward, so when the input dies at that node and the
     output element is no wider than the input element, the output can take the
     input's bytes (in place). A caller-owned model input (``io="caller"``, a const buffer)
     is never written.
3. Placement: several greedy orders (largest first, earliest first, longest-lived
   first) and, for up to ``EXACT_LIMIT`` buffers, every order; the first arrangement
   that reaches the lower bound (the largest sum of simultaneously live buffers) is
   optimal and ends the search.

Model input and output (``io``):

* ``"arena"`` (the default, as TFLM does): both are arena tensors with their true lifetimes.
  The input is live from before the first node (the caller writes it) to its last consumer,
  after which its bytes are reused (also in place); the output from its producer to after the
  last node (the caller reads it). Their lifetimes may be disjoint, so the output can take
  bytes of the input: the caller reads the output before writing the next input.
* ``"caller"``: they live in the caller's buffers and take no arena space (but the caller's
  RAM: peak RAM counts them).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from .graph import Graph
from .operators import get_op

ALIGN = 4  # bytes; keeps int32 tensors and word loads aligned on every Cortex-M
IO_MODES = ("arena", "caller")  # where the model input and output live (module docstring)
DEFAULT_IO = "arena"
EXACT_LIMIT = 7  # buffers: 7! = 5040 orders at most


@dataclass
class Placement:
    tensor: str
    offset: int  # bytes into the arena, or -1 for the model input/output buffers
    size: int
    first: int  # index of the producing node (-1 for the model input)
    last: int  # index of the last consuming node
    buffer: str  # "arena", "input" or "output"


@dataclass
class MemoryPlan:
    placements: dict[str, Placement]
    arena_bytes: int
    lower_bound: int = 0
    strategy: str = ""
    inplace: list | None = None
    io: str = "caller"  # where the model input and output live: "arena" or "caller" (IO_MODES)

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound": self.lower_bound, "strategy": self.strategy,
                "inplace": self.inplace or [], "io": self.io,
                "tensors": {k: vars(v) for k, v in self.placements.items()}}


def _round_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def _buffers(graph: Graph, io: str):
    """Group tensors that share storage; returns (owner map, in-place node list). With caller-owned
    I/O the input is never written and the output never shares bytes with another tensor."""
    root: dict[str, str] = {}
    owner = lambda t: root.get(t, t)  # noqa: E731
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last_use[t] = i
    inplace = []
    in_owner = graph.inputs[0]
    for i, node in enumerate(graph.nodes):
        op = get_op(node.op, node.name)
        y = node.outputs[0]
        if op.alias:
            root[y] = owner(node.inputs[0])
            continue
        if y in graph.outputs and io == "caller":
            continue
        for x in op.inplace_inputs(node, graph):
            group = [t for t in graph.tensors if owner(t) == owner(x)]
            dies_here = all(last_use.get(t, -1) <= i for t in group)
            # the op vouches for the element order of x (Op.inplace_inputs), not of its other inputs:
            # if another input shares x's bytes (y = conv(x) + x), writing over x would corrupt it
            acts = [t for t in node.inputs if not graph.tensors[t].const]
            shared = sum(owner(t) == owner(x) for t in acts) > 1
            # the bytes must fit too
            if (io == "arena" or owner(x) != in_owner) and dies_here and not shared \
                    and graph.tensors[y].itemsize <= graph.tensors[x].itemsize \
                    and graph.tensors[y].nbytes <= graph.tensors[x].nbytes:
                root[y] = owner(x)
                inplace.append(node.name)
                break
    return owner, inplace


def plan_memory(graph: Graph, io: str = DEFAULT_IO) -> MemoryPlan:
    """The arena layout of ``graph``; ``io`` says where the model input and output live (IO_MODES)."""
    if io not in IO_MODES:
        raise ValueError(f"io '{io}': choose one of {', '.join(IO_MODES)}")
    owner, inplace = _buffers(graph, io)
    in_owner, out_owner = owner(graph.inputs[0]), owner(graph.outputs[0])
    if in_owner == out_owner and io == "caller":
        raise ValueError("model output aliases its input")
    first: dict[str, int] = {in_owner: -1}
    last: dict[str, int] = {}
    size: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.outputs:
            first.setdefault(owner(t), i)
        for t in node.inputs:
            if not graph.tensors[t].const:
                last[owner(t)] = i
    for t, info in graph.tensors.items():
        if not info.const:
            size[owner(t)] = max(size.get(owner(t), 0), info.nbytes)

    placements: dict[str, Placement] = {}
    arena = []
    end = len(graph.nodes)  # "after the last node": the caller reads the output then
    for t, f in first.items():
        buf = "arena" if io == "arena" else "input" if t == in_owner else "output" if t == out_owner else "arena"
        p = Placement(t, -1, size[t], f, end if t == out_owner else last.get(t, end), buf)
        placements[t] = p
        if buf == "arena":
            arena.append(p)

    bound = _lower_bound(arena)
    best, strategy = None, ""
    orders = {
        "greedy by size": sorted(arena, key=lambda p: (-p.size, p.first)),
        "greedy by first use": sorted(arena, key=lambda p: (p.first, -p.size)),
        "greedy by lifetime": sorted(arena, key=lambda p: (-(p.last - p.first), -p.size)),
    }
    candidates = list(orders.items())
    if len(arena) <= EXACT_LIMIT:
        candidates += [("exhaustive", list(o)) for o in itertools.permutations(arena)]
    for name, order in candidates:
        offsets, total = _place(order)
        if best is None or total < best[1]:
            best, strategy = (offsets, total), name
        if total <= bound:
            break
    offsets, arena_bytes = best if best else ({}, 0)
    for p in arena:
        p.offset = offsets[p.tensor]
    for t in graph.tensors:
        if not graph.tensors[t].const and owner(t) != t and owner(t) in placements:
            placements[t] = placements[owner(t)]
    if arena_bytes == bound:
        strategy += " (optimal: meets the lower bound)"
    return MemoryPlan(placements, arena_bytes, bound, strategy, inplace, io)


def _place(order: list[Placement]) -> tuple[dict[str, int], int]:
    """Lowest offset that fits, in the given order; returns offsets and arena size."""
    placed: list[tuple[int, int, Placement]] = []
    offsets: dict[str, int] = {}
    for p in order:
        live = sorted((o, s) for o, s, q in placed if not (q.last < p.first or p.last < q.first))
        offset = 0
        need = _round_up(p.size)
        for o, s in live:
            if offset + need <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, need, p))
        offsets[p.tensor] = offset
    return offsets, max((o + s for o, s, _ in placed), default=0)


def _lower_bound(arena: list[Placement]) -> int:
    """No arrangement beats the largest total of buffers live at the same step."""
    steps = {p.first for p in arena} | {p.last for p in arena}
    return max((sum(_round_up(p.size) for p in arena if p.first <= s <= p.last) for s in steps), default=0)


def check_plan(plan: MemoryPlan) -> None:
    """Assert that no two simultaneously live arena buffers overlap (used by tests and builds)."""
    ps = list({id(p): p for p in plan.placements.values() if p.buffer == "arena"}.values())
    for i, a in enumerate(ps):
        assert a.offset + a.size <= plan.arena_bytes, f"{a.tensor} exceeds the arena"
        for b in ps[i + 1:]:
            live = not (a.last < b.first or b.last < a.first)
            disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
            assert not live or disjoint, f"{a.tensor} and {b.tensor} overlap while both live"
