"""Static memory planner: places every intermediate activation in one arena.

Lifetimes come from the node schedule; tensors whose lifetimes overlap get disjoint
byte ranges. Placement is greedy by size (largest first, lowest offset that fits), the
strategy TFLM's GreedyMemoryPlanner uses. Model input and output live in the
caller's buffers, so they take no arena space. Reshapes alias their input.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ops import get_op
from .graph import Graph

ALIGN = 4  # bytes; keeps int32 tensors and word loads aligned on every Cortex-M


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

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes,
                "tensors": {k: vars(v) for k, v in self.placements.items()}}


def _round_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def plan_memory(graph: Graph) -> MemoryPlan:
    # Resolve aliases to the tensor that owns the storage.
    root: dict[str, str] = {}
    for node in graph.nodes:
        if get_op(node.op, node.name).alias:
            root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])
    owner = lambda t: root.get(t, t)  # noqa: E731

    first: dict[str, int] = {owner(graph.inputs[0]): -1}
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.outputs:
            first.setdefault(owner(t), i)
        for t in node.inputs:
            if not graph.tensors[t].const:
                last[owner(t)] = i
    in_owner, out_owner = owner(graph.inputs[0]), owner(graph.outputs[0])
    if in_owner == out_owner:
        raise ValueError("model output aliases its input")

    placements: dict[str, Placement] = {}
    arena = []
    for t, f in first.items():
        size = graph.tensors[t].nbytes
        buf = "input" if t == in_owner else "output" if t == out_owner else "arena"
        p = Placement(t, -1, size, f, last.get(t, len(graph.nodes)), buf)
        placements[t] = p
        if buf == "arena":
            arena.append(p)

    placed: list[Placement] = []
    for p in sorted(arena, key=lambda p: (-p.size, p.first)):
        live = sorted((q for q in placed if not (q.last < p.first or p.last < q.first)), key=lambda q: q.offset)
        offset = 0
        for q in live:
            if offset + _round_up(p.size) <= q.offset:
                break
            offset = max(offset, q.offset + _round_up(q.size))
        p.offset = offset
        placed.append(p)
    arena_bytes = max((p.offset + _round_up(p.size) for p in placed), default=0)
    for alias, r in root.items():
        placements[alias] = placements[r]
    return MemoryPlan(placements, arena_bytes)


def check_plan(plan: MemoryPlan) -> None:
    """Assert that no two simultaneously live arena tensors overlap (used by tests and builds)."""
    ps = {id(p): p for p in plan.placements.values() if p.buffer == "arena"}.values()
    ps = list(ps)
    for i, a in enumerate(ps):
        assert a.offset + a.size <= plan.arena_bytes, f"{a.tensor} exceeds the arena"
        for b in ps[i + 1:]:
            live = not (a.last < b.first or b.last < a.first)
            disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
            assert not live or disjoint, f"{a.tensor} and {b.tensor} overlap while both live"
