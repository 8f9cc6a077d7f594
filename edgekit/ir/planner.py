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
3. Row fusion (TinyEngine's and MCUNetV2's patch-based execution, issue 16): a convolution A whose
   output only the next node, convolution B, reads can run interleaved with B in steps of B's
   output pixels (``row_fusions``): A computes just the rows B's next step needs, into a *ring* of
   whole rows, so A's output never exists whole. A's inputs then stay live until B ends, B's
   output is live from A on, and B may overwrite A's input in place only where the schedule
   proves A never reads those bytes again. A fusion is kept only when it makes the arena smaller.
4. Placement: several greedy orders (largest first, earliest first, longest-lived
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
from dataclasses import dataclass, field

from .graph import Graph
from .operators import get_op

ALIGN = 4  # bytes; keeps int32 tensors and word loads aligned on every Cortex-M
IO_MODES = ("arena", "caller")  # where the model input and output live (module docstring)
DEFAULT_IO = "arena"
EXACT_LIMIT = 7  # buffers: 7! = 5040 orders at most
# Pixels per block of the GEMM convolution kernels (backends/cortexm/kernels/conv2d_gemm.GEMM_PIXELS):
# a row-fused step is whole blocks, and the producer computes whole blocks (a block that wraps around
# the ring's end goes through the kernel's tail buffer).
FUSE_BLOCK = 3


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
    fused: list = field(default_factory=list)  # RowFusion records (module docstring, 3.)

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound": self.lower_bound, "strategy": self.strategy,
                "inplace": self.inplace or [], "io": self.io, "fused": [vars(f) for f in self.fused],
                "tensors": {k: vars(v) for k, v in self.placements.items()}}

    def fusion_of(self, node_name: str):
        """The row fusion ``node_name`` takes part in (as producer or consumer), or None."""
        return next((f for f in self.fused if node_name in (f.producer, f.consumer)), None)


@dataclass
class RowFusion:
    """Convolution ``producer`` (A) runs interleaved with ``consumer`` (B), its output in a ring.

    Step s computes B's output pixels [s * step, min((s + 1) * step, B's pixels)) after A has
    computed its output pixels up to ``a_end[s]``. A's output pixel p sits in ring slot
    p % ring_pixels, so A's output row r is whole at slot (r % ring_rows) * A's width."""
    producer: str
    consumer: str
    ring: str  # the tensor that lives in the ring: A's output
    ring_rows: int
    ring_pixels: int
    ring_bytes: int
    step: int  # B's output pixels per step (a multiple of FUSE_BLOCK)
    a_end: list  # per step: A's output pixels computed before B's step runs


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


def plan_memory(graph: Graph, io: str = DEFAULT_IO, *, fuse: bool = True, exclude=()) -> MemoryPlan:
    """The arena layout of ``graph``; ``io`` says where the model input and output live (IO_MODES).
    ``fuse``: row-fuse convolution pairs where that makes the arena smaller (module docstring, 3.),
    except pairs that involve a node named in ``exclude`` (e.g. one whose kernel has no row ranges)."""
    if io not in IO_MODES:
        raise ValueError(f"io '{io}': choose one of {', '.join(IO_MODES)}")
    base = _plan(graph, io, [])
    fusions = [f for f in row_fusions(graph, io) if f.producer not in exclude and f.consumer not in exclude] \
        if fuse else []
    if not fusions:
        return base
    best = _plan(graph, io, fusions)
    if best.arena_bytes >= base.arena_bytes:
        return base
    # each fusion costs instructions (ring addressing, steps): drop those the arena does not need
    for f in list(fusions):
        trial = [g for g in fusions if g is not f]
        plan = _plan(graph, io, trial)
        if plan.arena_bytes <= best.arena_bytes:
            fusions, best = trial, plan
    return best


def _plan(graph: Graph, io: str, fusions: list[RowFusion]) -> MemoryPlan:
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
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    for f in fusions:
        a, b = index[f.producer], index[f.consumer]
        size[owner(f.ring)] = f.ring_bytes
        for t in graph.nodes[a].inputs:  # A reads its inputs until B's last step
            if not graph.tensors[t].const:
                last[owner(t)] = max(last[owner(t)], b)
        y = owner(graph.nodes[b].outputs[0])  # B writes from A's first step on
        first[y] = min(first[y], a)

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
    return MemoryPlan(placements, arena_bytes, bound, strategy, inplace, io, list(fusions))


def _conv_geometry(node, graph) -> dict | None:
    """Kernel, stride, dilation, top padding and shapes of a regular (not depthwise) conv2d node."""
    if node.op != "conv2d" or node.attrs.get("depthwise"):
        return None
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    a = node.attrs
    return {"ih": x.shape[0], "iw": x.shape[1], "ic": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
            "oc": y.shape[2], "kh": a["kernel"][0], "sh": a["stride"][0], "dh": a["dilation"][0],
            "pad_t": a["pad"][0], "x_item": x.itemsize, "y_item": y.itemsize}


def fusion_schedule(ga: dict, gb: dict) -> tuple[int, list[int], int]:
    """(B's pixels per step, A's pixels computed before each step, the ring's pixels) for conv A
    feeding conv B (geometries of ``_conv_geometry``). Each step needs A's rows from B's first
    output row's top tap to its last output row's bottom tap; A computes whole blocks, and the
    ring keeps the A pixels from the oldest row a step reads to the newest A has written."""
    npa, npb = ga["oh"] * ga["ow"], gb["oh"] * gb["ow"]
    step = FUSE_BLOCK * -(-gb["ow"] // FUSE_BLOCK)
    a_end, span, done = [], 0, 0
    for q0 in range(0, npb, step):
        q1 = min(q0 + step, npb)
        lo = max(0, (q0 // gb["ow"]) * gb["sh"] - gb["pad_t"])
        hi = min(ga["oh"], ((q1 - 1) // gb["ow"]) * gb["sh"] - gb["pad_t"] + (gb["kh"] - 1) * gb["dh"] + 1)
        done = max(done, min(npa, -(-hi * ga["ow"] // FUSE_BLOCK) * FUSE_BLOCK))
        a_end.append(done)
        span = max(span, done - lo * ga["ow"])
    return step, a_end, -(-span // ga["ow"]) * ga["ow"]  # whole rows


def _overwrite_is_safe(ga: dict, gb: dict, step: int, a_end: list[int]) -> bool:
    """B's output goes over A's input (B's residual, in place): B's step s writes its output
    pixels [s * step, ...) only where A's later steps read no more input (A's rows from a_end[s] on)."""
    npa, npb = ga["oh"] * ga["ow"], gb["oh"] * gb["ow"]
    x_row = ga["iw"] * ga["ic"] * ga["x_item"]
    y_px = gb["oc"] * gb["y_item"]
    for s, done in enumerate(a_end):
        if done >= npa:
            break
        first_row = max(0, (done // ga["ow"]) * ga["sh"] - ga["pad_t"])
        if min(npb, (s + 1) * step) * y_px > first_row * x_row:
            return False
    return True


def row_fusions(graph: Graph, io: str = DEFAULT_IO) -> list[RowFusion]:
    """The conv -> conv pairs that may run row-fused (module docstring, 3.): A's output is read by
    B alone, the next node, as its main input; neither overwrites that output's bytes; a ring of
    whole rows is smaller than the output; and if B overwrites A's input, the schedule proves it safe.
    No node is in two pairs."""
    owner, _ = _buffers(graph, io)
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            readers.setdefault(t, []).append(i)
    out = []
    for i in range(len(graph.nodes) - 1):
        na, nb = graph.nodes[i], graph.nodes[i + 1]
        ga, gb = _conv_geometry(na, graph), _conv_geometry(nb, graph)
        t = na.outputs[0]
        if ga is None or gb is None or t in graph.outputs or readers.get(t) != [i + 1] or nb.inputs[0] != t:
            continue
        if owner(t) != t or any(owner(u) == t for u in graph.tensors if u != t):
            continue  # A's output shares bytes (A in place, or B over it): it must exist whole
        step, a_end, ring_px = fusion_schedule(ga, gb)
        if ring_px >= ga["oh"] * ga["ow"]:
            continue
        xa = [u for u in na.inputs if not graph.tensors[u].const]
        if any(owner(nb.outputs[0]) == owner(u) for u in xa) and not _overwrite_is_safe(ga, gb, step, a_end):
            continue
        out.append(RowFusion(na.name, nb.name, t, ring_px // ga["ow"], ring_px,
                             _round_up(ring_px * ga["oc"] * ga["y_item"]), step, a_end))
    # a node takes part in one fusion at most (no chains): the pairs that save the most bytes first
    out.sort(key=lambda f: f.ring_bytes - graph.tensors[f.ring].nbytes)
    chosen: list[RowFusion] = []
    for f in out:
        if not any({f.producer, f.consumer} & {g.producer, g.consumer} for g in chosen):
            chosen.append(f)
    return sorted(chosen, key=lambda f: [n.name for n in graph.nodes].index(f.producer))


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
