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
   proves A never reads those bytes again. B may be a depthwise convolution (a MobileNet's
   conv -> depthwise and pointwise -> depthwise pairs), whose steps are whole rows; its output
   then starts at A's input's offset (``RowFusion.over_input``, a *pinned* placement: the two
   overlap while both live, as the replayed schedule allows), which is what lets the first
   layers of a MobileNet run band by band in little more than their input's bytes.
   A fusion is kept only when it makes the arena smaller.
4. Kernel scratch (``plan_memory(scratch=...)``): bytes a kernel needs while its node runs, where no
   free gap holds them and the stack should not; with ``scratch_over_input`` pinned at the node's first
   input when that input dies there (the kernel reads each input byte before it writes over it), so the
   arena holds the larger of the two rather than both.
5. Placement: several greedy orders (largest first, earliest first, longest-lived
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
import random
from dataclasses import dataclass, field

from .graph import Graph
from .operators import get_op

ALIGN = 4  # bytes; keeps int32 tensors and word loads aligned on every Cortex-M
IO_MODES = ("arena", "caller")  # where the model input and output live (module docstring)
DEFAULT_IO = "arena"
EXACT_LIMIT = 7  # buffers: 7! = 5040 orders at most
# Beyond that, the final plan tries up to this many seeded random orders when the greedy ones miss the lower
# bound (VWW with its fused bands and reserved scratch: 32,256 B greedy, the 30,144 B bound after 87 orders).
RANDOM_ORDERS = 300
# Pixels per block of the GEMM convolution kernels (backends/cortexm/kernels/conv2d_gemm.GEMM_PIXELS):
# a row-fused step is whole blocks, and the producer computes whole blocks (a block that wraps around
# the ring's end goes through the kernel's tail buffer).
FUSE_BLOCK = 3
# Output rows per step of a depthwise consumer: its DSP kernels refill their int16 ring of kh input rows
# at every call (kh - stride rows more than a whole-layer call), so a few rows per call keep that small.
DW_STEP_ROWS = 4


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
    pinned: dict = field(default_factory=dict)  # tensor -> the tensor whose offset it starts at, overlapping it
    scratch: dict = field(default_factory=dict)  # node index -> (offset, bytes) reserved for its kernel's scratch

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound": self.lower_bound, "strategy": self.strategy,
                "inplace": self.inplace or [], "io": self.io, "fused": [vars(f) for f in self.fused],
                "pinned": self.pinned, "scratch": {str(i): list(v) for i, v in self.scratch.items()},
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
    step: int  # B's output pixels per step (a multiple of FUSE_BLOCK, or whole rows for a depthwise B)
    a_end: list  # per step: A's output pixels computed before B's step runs
    over_input: bool = False  # B's output starts at A's input's offset, overlapping it (proven safe)


def _round_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def _buffers(graph: Graph, io: str, fused=()):
    """Group tensors that share storage; returns (owner map, in-place node list). With caller-owned
    I/O the input is never written and the output never shares bytes with another tensor. The
    consumers of the row fusions ``fused`` do not run in place over their input: it is a ring."""
    root: dict[str, str] = {}
    owner = lambda t: root.get(t, t)  # noqa: E731
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last_use[t] = i
    inplace = []
    in_owner = graph.inputs[0]
    rings = {f.consumer: f.ring for f in fused}
    for i, node in enumerate(graph.nodes):
        op = get_op(node.op, node.name)
        y = node.outputs[0]
        if op.alias:
            root[y] = owner(node.inputs[0])
            continue
        if y in graph.outputs and io == "caller":
            continue
        for x in op.inplace_inputs(node, graph):
            if rings.get(node.name) == x:
                continue
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


def plan_memory(graph: Graph, io: str = DEFAULT_IO, *, fuse: bool = True, exclude=(),
                scratch: dict | None = None, scratch_over_input=()) -> MemoryPlan:
    """The arena layout of ``graph``; ``io`` says where the model input and output live (IO_MODES).
    ``fuse``: row-fuse convolution pairs where that makes the arena smaller (module docstring, 3.),
    except pairs that involve a node named in ``exclude`` (e.g. one whose kernel has no row ranges).
    ``scratch``: node name -> bytes to reserve in the arena while that node runs (a kernel's scratch
    buffer that found no free gap and is too large for the stack; ``MemoryPlan.scratch``).
    ``scratch_over_input``: the nodes of ``scratch`` whose kernel may write its scratch over its first
    input, starting at the input's offset (the kernel reads each input byte before it writes there, e.g.
    a dense layer widening its int8 input in place, from the top down): the scratch is pinned there when
    that input dies at the node and lives in the arena (``scratch_in_place``)."""
    if io not in IO_MODES:
        raise ValueError(f"io '{io}': choose one of {', '.join(IO_MODES)}")
    scratch = scratch or {}
    over = frozenset(scratch_over_input) & set(scratch)
    base = _plan(graph, io, [], scratch, over=over)
    fusions = [f for f in row_fusions(graph, io) if f.producer not in exclude and f.consumer not in exclude] \
        if fuse else []
    best = _plan(graph, io, fusions, scratch, over=over) if fusions else base
    if best.arena_bytes >= base.arena_bytes:
        fusions, best = [], base
    # each fusion costs instructions (ring addressing, steps): drop those the arena does not need
    for f in list(fusions):
        trial = [g for g in fusions if g is not f]
        plan = _plan(graph, io, trial, scratch, over=over)
        if plan.arena_bytes <= best.arena_bytes:
            fusions, best = trial, plan
    if best.arena_bytes > best.lower_bound:  # the greedy orders missed the bound: search further
        best = _plan(graph, io, fusions, scratch, RANDOM_ORDERS, over=over)
    return best


def scratch_in_place(plan: MemoryPlan, graph: Graph, node_index: int) -> bool:
    """Whether node ``node_index``'s reserved scratch starts at its first input's offset (pinned over the
    input that dies there: ``plan_memory(scratch_over_input=...)``)."""
    reserved = plan.scratch.get(node_index)
    if not reserved:
        return False
    x = plan.placements.get(graph.nodes[node_index].inputs[0])
    return x is not None and x.buffer == "arena" and x.offset == reserved[0] \
        and plan.pinned.get(f"{graph.nodes[node_index].name}:scratch") == x.tensor


def _plan(graph: Graph, io: str, fusions: list[RowFusion], scratch: dict, shuffles: int = 0,
          over: frozenset = frozenset()) -> MemoryPlan:
    owner, inplace = _buffers(graph, io, fusions)
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
    pins: dict[str, str] = {}
    for f in fusions:
        a, b = index[f.producer], index[f.consumer]
        size[owner(f.ring)] = f.ring_bytes
        for t in graph.nodes[a].inputs:  # A reads its inputs until B's last step
            if not graph.tensors[t].const:
                last[owner(t)] = max(last[owner(t)], b)
        y = owner(graph.nodes[b].outputs[0])  # B writes from A's first step on
        first[y] = min(first[y], a)
        if f.over_input:
            pins[y] = owner(graph.nodes[a].inputs[0])

    placements: dict[str, Placement] = {}
    arena = []
    end = len(graph.nodes)  # "after the last node": the caller reads the output then
    for t, f in first.items():
        buf = "arena" if io == "arena" else "input" if t == in_owner else "output" if t == out_owner else "arena"
        p = Placement(t, -1, size[t], f, end if t == out_owner else last.get(t, end), buf)
        placements[t] = p
        if buf == "arena":
            arena.append(p)
    for name, nbytes in scratch.items():  # live only while the node runs (a fused node: per call)
        p = Placement(f"{name}:scratch", -1, nbytes, index[name], index[name], "arena")
        placements[p.tensor] = p
        arena.append(p)
        x = owner(graph.nodes[index[name]].inputs[0])
        if name in over and x in placements and placements[x].last == index[name]:
            pins[p.tensor] = x  # over its input, which nothing reads after this node

    pins = {t: u for t, u in pins.items() if t in placements and u in placements
            and placements[t].buffer == placements[u].buffer == "arena"}
    bound = _lower_bound(arena, pins)
    best, strategy = None, ""
    orders = {
        "greedy by size": sorted(arena, key=lambda p: (-p.size, p.first)),
        "greedy by first use": sorted(arena, key=lambda p: (p.first, -p.size)),
        "greedy by lifetime": sorted(arena, key=lambda p: (-(p.last - p.first), -p.size)),
    }
    candidates = list(orders.items())
    if len(arena) <= EXACT_LIMIT:
        candidates += [("exhaustive", list(o)) for o in itertools.permutations(arena)]
    elif shuffles:
        rng = random.Random(0)  # seeded: the same graph always gets the same plan
        candidates += [("random order", rng.sample(arena, len(arena))) for _ in range(shuffles)]
    for name, order in candidates:
        offsets, total = _place(_pins_after_targets(order, pins), pins)
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
    # a pin holds only where the placement could honour it (else the tensors simply do not overlap)
    pinned = {t: u for t, u in pins.items() if placements[t].offset == placements[u].offset}
    reserved = {index[n]: (placements[f"{n}:scratch"].offset, b) for n, b in scratch.items()}
    return MemoryPlan(placements, arena_bytes, bound, strategy, inplace, io, list(fusions), pinned, reserved)


def _conv_geometry(node, graph, depthwise: bool = False) -> dict | None:
    """Kernel, stride, dilation, top padding and shapes of a conv2d node: a regular one, or with
    ``depthwise`` a depthwise one too (a fusion's consumer)."""
    if node.op != "conv2d" or (node.attrs.get("depthwise") and not depthwise):
        return None
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    a = node.attrs
    return {"ih": x.shape[0], "iw": x.shape[1], "ic": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
            "oc": y.shape[2], "kh": a["kernel"][0], "sh": a["stride"][0], "dh": a["dilation"][0],
            "pad_t": a["pad"][0], "x_item": x.itemsize, "y_item": y.itemsize,
            "depthwise": bool(a.get("depthwise"))}


def fusion_schedule(ga: dict, gb: dict) -> tuple[int, list[int], int]:
    """(B's pixels per step, A's pixels computed before each step, the ring's pixels) for conv A
    feeding conv B (geometries of ``_conv_geometry``). Each step needs A's rows from B's first
    output row's top tap to its last output row's bottom tap; A computes whole blocks, and the
    ring keeps the A pixels from the oldest row a step reads to the newest A has written."""
    npa, npb = ga["oh"] * ga["ow"], gb["oh"] * gb["ow"]
    # a depthwise B computes whole rows per call (its kernels work row by row); a GEMM B whole blocks
    step = gb["ow"] * min(DW_STEP_ROWS, gb["oh"]) if gb.get("depthwise") else FUSE_BLOCK * -(-gb["ow"] // FUSE_BLOCK)
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
        if done >= min(npa, a_end[-1]):
            break  # A computes no more pixels after this step (B needs no more of A's rows)
        first_row = max(0, (done // ga["ow"]) * ga["sh"] - ga["pad_t"])
        if min(npb, (s + 1) * step) * y_px > first_row * x_row:
            return False
    return True


def row_fusions(graph: Graph, io: str = DEFAULT_IO) -> list[RowFusion]:
    """The conv -> conv pairs that may run row-fused (module docstring, 3.): A's output is read by
    B alone, the next node, as its main input; neither overwrites that output's bytes (a depthwise B
    gives up running in place over it); a ring of whole rows is smaller than the output; and if B
    overwrites A's input, the schedule proves it safe. No node is in two pairs."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            readers.setdefault(t, []).append(i)
    out = []
    for i in range(len(graph.nodes) - 1):
        na, nb = graph.nodes[i], graph.nodes[i + 1]
        ga, gb = _conv_geometry(na, graph), _conv_geometry(nb, graph, depthwise=True)
        t = na.outputs[0]
        if ga is None or gb is None or t in graph.outputs or readers.get(t) != [i + 1] or nb.inputs[0] != t:
            continue
        owner, _ = _buffers(graph, io, [RowFusion(na.name, nb.name, t, 0, 0, 0, 0, [])])
        if owner(t) != t or any(owner(u) == t for u in graph.tensors if u != t):
            continue  # A's output shares bytes (A in place, or B over it): it must exist whole
        step, a_end, ring_px = fusion_schedule(ga, gb)
        if ring_px >= ga["oh"] * ga["ow"]:
            continue
        xa = [u for u in na.inputs if not graph.tensors[u].const]
        yb = nb.outputs[0]
        if any(owner(yb) == owner(u) for u in xa) and not _overwrite_is_safe(ga, gb, step, a_end):
            continue
        out.append(RowFusion(na.name, nb.name, t, ring_px // ga["ow"], ring_px,
                             _round_up(ring_px * ga["oc"] * ga["y_item"]), step, a_end,
                             gb["depthwise"] and _may_overwrite(graph, io, owner, readers, i, yb)
                             and _overwrite_is_safe(ga, gb, step, a_end)))
    # a node takes part in one fusion at most (no chains): the pairs that save the most bytes first
    out.sort(key=lambda f: f.ring_bytes - graph.tensors[f.ring].nbytes)
    chosen: list[RowFusion] = []
    for f in out:
        if not any({f.producer, f.consumer} & {g.producer, g.consumer} for g in chosen):
            chosen.append(f)
    return sorted(chosen, key=lambda f: [n.name for n in graph.nodes].index(f.producer))


def _may_overwrite(graph: Graph, io: str, owner, readers: dict, a: int, yb: str) -> bool:
    """Whether B's output (``yb``, of the node after ``a``) may start at A's input's offset: nothing
    reads A's input (or a tensor sharing its bytes) after A, it is not a caller-owned model input,
    and B's output is not itself in place over another tensor (later layers may run in place over it)."""
    xa = graph.nodes[a].inputs[0]
    if graph.tensors[xa].const or owner(yb) != yb:
        return False
    if io == "caller" and owner(xa) == owner(graph.inputs[0]):
        return False
    group = [u for u in graph.tensors if owner(u) == owner(xa)]
    return not any(u in graph.outputs for u in group) and all(r <= a for u in group for r in readers.get(u, []))


def _pins_after_targets(order: list[Placement], pins: dict[str, str]) -> list[Placement]:
    """``order`` with each pinned placement moved just after the one it is pinned to."""
    out, done, waiting = [], set(), []
    for p in order:
        if p.tensor in pins and pins[p.tensor] not in done:
            waiting.append(p)
            continue
        out.append(p)
        done.add(p.tensor)
        while ready := [w for w in waiting if pins[w.tensor] in done]:
            for w in ready:
                waiting.remove(w)
                out.append(w)
                done.add(w.tensor)
    return out + waiting


def _place(order: list[Placement], pins: dict[str, str] | None = None) -> tuple[dict[str, int], int]:
    """Lowest offset that fits, in the given order; returns offsets and arena size. A pinned
    placement (``pins``: tensor -> target) takes its target's offset when nothing else live is in
    the way there, overlapping the target; otherwise it is placed like any other."""
    pins = pins or {}
    placed: list[tuple[int, int, Placement]] = []
    offsets: dict[str, int] = {}
    for p in order:
        live = sorted((o, s, q.tensor) for o, s, q in placed if not (q.last < p.first or p.last < q.first))
        need = _round_up(p.size)
        target = pins.get(p.tensor)
        if target in offsets and all(t == target or offsets[target] + need <= o or o + s <= offsets[target]
                                     for o, s, t in live):
            offset = offsets[target]
        else:
            offset = 0
            for o, s, _ in live:
                if offset + need <= o:
                    break
                offset = max(offset, o + s)
        placed.append((offset, need, p))
        offsets[p.tensor] = offset
    return offsets, max((o + s for o, s, _ in placed), default=0)


def _lower_bound(arena: list[Placement], pins: dict[str, str] | None = None) -> int:
    """No arrangement beats the largest total of buffers live at the same step (pinned buffers, which
    may start at one offset, count as their largest)."""
    pins = pins or {}
    steps = {p.first for p in arena} | {p.last for p in arena}
    best = 0
    for st in steps:
        live = {p.tensor: _round_up(p.size) for p in arena if p.first <= st <= p.last}
        root = {t: t for t in live}

        def find(t):
            while root[t] != t:
                t = root[t]
            return t
        for t, u in pins.items():
            if t in live and u in live:
                root[find(t)] = find(u)
        groups: dict[str, int] = {}
        for t, n in live.items():
            groups[find(t)] = max(groups.get(find(t), 0), n)
        best = max(best, sum(groups.values()))
    return best


def check_plan(plan: MemoryPlan) -> None:
    """Assert that no two simultaneously live arena buffers overlap (used by tests and builds)."""
    ps = list({id(p): p for p in plan.placements.values() if p.buffer == "arena"}.values())
    pinned = {(t, u) for t, u in plan.pinned.items()} | {(u, t) for t, u in plan.pinned.items()}
    for i, a in enumerate(ps):
        assert a.offset + a.size <= plan.arena_bytes, f"{a.tensor} exceeds the arena"
        for b in ps[i + 1:]:
            if (a.tensor, b.tensor) in pinned and a.offset == b.offset:
                continue  # a row fusion's output over its producer's input, proven safe (row_fusions)
            live = not (a.last < b.first or b.last < a.first)
            disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
            assert not live or disjoint, f"{a.tensor} and {b.tensor} overlap while both live"
