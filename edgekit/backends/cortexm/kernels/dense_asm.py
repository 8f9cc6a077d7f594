"""DSP dense layers as one generated assembly loop per layer (templates/cortexm/ops_dsp/dense_asm.c.j2,
docs/kernels.md "Dense"): the row blocks, the k-steps and the requantization all inside one ``asm``
statement over 13 registers, laid out at build time for the layer's shape.

Two weight forms:

* ``dense_asm`` (``--optimize speed``): int16 weights, doubled (so the accumulator is 2 acc, what the
  SMMLAR epilogue takes), 4 rows per block: per k-pair one SMLAD per row.
* ``dense_asm_int8`` (int8 weights, every mode): two rows share each int16 half: h = a + 256 b (a's byte
  low, b's high). SMLAD of the raw word gives A + 256 B, SMLAD of its SXTB16 gives A, so 4 MACs cost
  3 instructions (SMLAD, SXTB16, SMLAD) instead of 4 (2 SXTB16, 2 SMLAD); B = (acc_h - acc_a) / 256
  exactly when |B| < 2^23 (checked at build time from the weights and the input's range), since
  SMLAD's additions wrap like int32 additions. A weight of -128 in b's byte beside a negative a would
  leave int16: such layers are refused (TFLite's int8 weights are within [-127, 127]).

The input comes either widened once per layer into int16 pairs in a scratch buffer (``buf``: one LDM
brings the pairs of 3 k-steps) or, where no free arena gap holds that buffer (and, for int16 weights,
the stack budget does not either), straight from the int8 input (``fly``: LDR + 2 SXTB16 per input word
and row block). A k-pair is (x[4q], x[4q+2]) or (x[4q+1], x[4q+3]): the halves SXTB16 makes of
input word q and of it rotated by 8.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import Fallback, KernelVariant, Selection
from .common import accumulator_bounds, doubled_constants, in_place, pair_words
from ....ir.planner import scratch_in_place
from .registry import STACK_SCRATCH_LIMIT, arena_gap

#: the two pointers: the input (or its widened pairs) and the weight stream
XP, WP = "r0", "r1"
#: the other registers the statement takes (r7 stays the frame pointer, sp is sp)
POOL = ("r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr")
#: k-step groups per inner loop iteration at most (the first iteration enters the body part-way): 3, where
#: code flash counts (AD on the M4 with the int8 pairs: 277,070 instructions and 6.1 KB of code with 4,
#: 270,926 and 8.3 KB with 8), and 24 for int16 weights over many row blocks (speed: a 128-input row's
#: k-steps unrolled, about 1.3 KB of code per layer)
MAX_UNROLL, MAX_UNROLL_WIDE = 3, 24
#: row blocks from which the int16 weights' k-steps unroll to MAX_UNROLL_WIDE
WIDE_BLOCKS = 16
#: largest |B| the pairs form recovers exactly from acc_h - acc_a = 256 B (mod 2^32)
PAIR_BOUND = 2**23


def kpairs(n_in: int) -> list[tuple[int, int]]:
    """The k-pairs in order: input indices (lo, hi) of the int16 halves, -1 for a zero half."""
    out = []
    for q in range(-(-n_in // 4)):
        b = 4 * q
        for p in ((b, b + 2), (b + 1, b + 3)):
            pair = tuple(i if i < n_in else -1 for i in p)
            if pair != (-1, -1):
                out.append(pair)
    return out


@dataclass
class Shape:
    """Register use of one form (s16 or pairs) and input source (buf or fly)."""
    pairs: bool
    xsrc: str
    acc: list[str]
    x: list[str]
    w: list[str]

    @property
    def rows(self) -> int:
        """Rows per block."""
        return len(self.acc)


def shape(pairs: bool, xsrc: str) -> Shape:
    """How the 11 registers besides the two pointers are shared out (the epilogue reuses the input
    and weight registers for M, K, the output pointer and its temporaries)."""
    pool = list(POOL)
    if xsrc == "buf":   # 4 accumulators, 3 pairs of the input per LDM, 4 weight words per LDM
        acc, x, w = pool[:4], pool[4:7], pool[7:]
    elif pairs:         # 4 accumulators (2 row pairs), the input word's two halves, 5 weight words
        acc, x, w = pool[:4], pool[4:6], pool[6:]
    else:               # 5 rows, the input word's two halves, 4 weight words
        acc, x, w = pool[:5], pool[5:7], pool[7:]
    return Shape(pairs, xsrc, acc, x, w)


@dataclass
class Program:
    """The generated statement: assembly lines, the stream's tokens of one block, the passes over
    the rows, and the instructions one inference executes in it."""
    lines: list[str] = field(default_factory=list)
    rows: int = 0
    #: (first row, blocks) of each pass
    passes: list[tuple[int, int]] = field(default_factory=list)
    tokens: list[tuple] = field(default_factory=list)
    instructions: int = 0
    #: the input pointer after the looped groups, in units of its type (int32 pairs or input bytes)
    xend: int = 0


class _Emitter:
    def __init__(self):
        self.lines: list[str] = []
        self.count = 0   # static instructions since the last mark

    def op(self, text: str) -> None:
        self.lines.append(text)
        self.count += 1

    def label(self, text: str) -> None:
        self.lines.append(text)


def _groups(sh: Shape, n_in: int) -> tuple[list[list[int]], list[int] | None, int]:
    """(full groups of k-pair indices, the partial last group or None, input bytes the full groups
    advance the input pointer by)."""
    kp = kpairs(n_in)
    idx = list(range(len(kp)))
    if sh.xsrc == "buf":
        g = len(sh.x)
        full = [idx[i:i + g] for i in range(0, len(idx) - len(idx) % g, g)]
        rest = idx[len(idx) - len(idx) % g:] or None
        return full, rest, 4 * len(idx)   # the partial group's LDM advances the pointer too
    words = n_in // 4
    full = [[2 * q, 2 * q + 1] for q in range(words)]
    rest = idx[2 * words:] or None
    return full, rest, 4 * words


def _x_load(e: _Emitter, sh: Shape, ext: str, group: list[int], partial: bool, n_in: int, w_tmp: str) -> dict:
    """Load the input pairs of a group; returns k-pair index -> register."""
    if sh.xsrc == "buf":
        regs = sh.x[:len(group)]
        if len(regs) == 1:
            e.op(f"ldr {regs[0]}, [{XP}], #4")
        else:
            e.op(f"ldmia {XP}!, {{{', '.join(regs)}}}")
        return dict(zip(group, regs))
    xa, xb = sh.x
    if not partial:
        e.op(f"ldr {xb}, [{XP}], #4")
        e.op(f"{ext} {xa}, {xb}")
        e.op(f"{ext} {xb}, {xb}, ror #8")
        return {group[0]: xa, group[1]: xb}
    r = n_in % 4   # the last 1-3 bytes, zero-extended into a word: no read past the tensor
    if r == 1:
        e.op(f"ldrb {xa}, [{XP}]")
    elif r == 2:
        e.op(f"ldrh {xb}, [{XP}]")
    else:
        e.op(f"ldrh {xb}, [{XP}]")
        e.op(f"ldrb {w_tmp}, [{XP}, #2]")
        e.op(f"orr {xb}, {xb}, {w_tmp}, lsl #16")
    if r == 1:
        e.op(f"{ext} {xa}, {xa}")
        return {group[0]: xa}
    e.op(f"{ext} {xa}, {xb}")
    e.op(f"{ext} {xb}, {xb}, ror #8")
    return dict(zip(group, (xa, xb)))


def _group(e: _Emitter, sh: Shape, ext: str, group: list[int], partial: bool, n_in: int, units: int,
           tokens: list | None) -> None:
    """One group of k-pairs over the block's rows (s16) or row pairs (pairs): weight words by LDM as
    they are needed, in the order they are used."""
    xr = _x_load(e, sh, ext, group, partial, n_in, sh.w[0])
    need = [(j, u) for j in group for u in range(units)]
    loaded: list[tuple[tuple[int, int], str]] = []
    for pos, (j, u) in enumerate(need):
        if not loaded:
            take = need[pos:pos + len(sh.w)]
            regs = sh.w[:len(take)]
            e.op(f"ldr {regs[0]}, [{WP}], #4" if len(regs) == 1 else f"ldmia {WP}!, {{{', '.join(regs)}}}")
            loaded = list(zip(take, regs))
            if tokens is not None:
                tokens.extend(("w", jj, uu) for jj, uu in take)
        (_, wr), loaded = loaded[0], loaded[1:]
        x = xr[j]
        if sh.pairs:
            lo, hi = sh.acc[2 * u], sh.acc[2 * u + 1]
            e.op(f"smlad {hi}, {x}, {wr}, {hi}")
            e.op(f"sxtb16 {wr}, {wr}")
            e.op(f"smlad {lo}, {x}, {wr}, {lo}")
        else:
            e.op(f"smlad {sh.acc[u]}, {x}, {wr}, {sh.acc[u]}")


def _unroll(n: int, most: int) -> int:
    """Full groups per loop iteration: all of them when few, else a divisor of n near ``most``."""
    if n <= most:
        return n
    for u in range(most, most // 2, -1):
        if n % u == 0:
            return u
    return most


def _clamp(e: _Emitter, t: str, e_shift: int | str, out_bits: int, signed: bool, lo: int, hi: int) -> None:
    """Shift by ``e_shift`` (an immediate, or a register holding the row's shift), saturate to the
    output type, clamp to [lo, hi] (a fused activation) where that is narrower."""
    sat = "ssat" if signed else "usat"
    if isinstance(e_shift, str):
        e.op(f"asr {t}, {t}, {e_shift}")
        e.op(f"{sat} {t}, #{out_bits}, {t}")
    else:
        e.op(f"{sat} {t}, #{out_bits}, {t}, asr #{e_shift}")
    tlo, thi = (-(2 ** (out_bits - 1)), 2 ** (out_bits - 1) - 1) if signed else (0, 2**out_bits - 1)
    if lo > tlo:
        e.op(f"cmp {t}, #{lo}")
        e.op("it lt")
        e.op(f"movlt {t}, #{lo}")
    if hi < thi:
        e.op(f"cmp {t}, #{hi}")
        e.op("it gt")
        e.op(f"movgt {t}, #{hi}")


def generate(pairs: bool, xsrc: str, ext: str, n_in: int, n_out: int, e_shift: int | None, out_bits: int,
             out_signed: bool, lo: int, hi: int, per_channel: bool = False) -> Program:
    """The statement for one layer (operands: %[m], %[k] the SMMLAR constants, %[o] the output
    pointer, %[wend] the end of the pass's weights, %[xend] the input pointer after the looped groups).
    ``per_channel``: each row's M and K (and its shift where ``e_shift`` is None) come from the stream.

    One block program of ``rows`` rows runs in passes: the blocks from row 0, and where the rows do not
    divide, first one block over the last ``rows`` rows (computing some rows twice, the same values)
    instead of a second copy of the program for the last 1-3 rows."""
    sh = shape(pairs, xsrc)
    full, rest, xbytes = _groups(sh, n_in)
    rows = min(sh.rows, n_out)
    units = -(-rows // 2) if pairs else rows
    nacc = 2 * units if pairs else rows
    accs = sh.acc[:nacc]
    main, rem = divmod(n_out, rows)
    passes = ([(n_out - rows, 1)] if rem else []) + [(0, main)]
    prog = Program()
    e = _Emitter()
    tokens: list[tuple] = [("init", a) for a in range(nacc)]
    e.label("10:")
    e.op(f"ldmia {WP}!, {{{', '.join(accs)}}}")
    per_block = e.count
    n_full = len(full)
    many = not pairs and sum(b for _, b in passes) >= WIDE_BLOCKS
    u = _unroll(n_full, MAX_UNROLL_WIDE if many else MAX_UNROLL)
    if n_full > u:
        # a loop of u groups; the first iteration enters the body at the group that leaves a whole
        # number of iterations (no second copy of the remaining groups)
        iters = -(-n_full // u)
        skip = iters * u - n_full
        prog.xend = n_full * (len(sh.x) if xsrc == "buf" else 4)
        if skip:
            e.op("b 12f")
        e.label("11:")
        e.count = 0
        for i, g in enumerate(full[:u]):
            if skip and i == skip:
                e.label("12:")
            _group(e, sh, ext, g, False, n_in, units, None)
        e.op(f"ldr {sh.w[0]}, %[xend]")
        e.op(f"cmp {XP}, {sh.w[0]}")
        e.op(f"bne 11b")
        body = e.count
        per_block += (1 if skip else 0) + body * iters - (body - 3) * skip // u
        for g in full:
            _group(_Emitter(), sh, ext, g, False, n_in, units, tokens)
    else:
        e.count = 0
        for g in full:
            _group(e, sh, ext, g, False, n_in, units, tokens)
        per_block += e.count
    e.count = 0
    if rest:
        _group(e, sh, ext, rest, True, n_in, units, tokens)
    # requantize and store: M, K, the output pointer in free registers
    free = sh.x + sh.w
    m, k, o, t = free[:4]
    u2 = free[4] if pairs else None
    ereg = free[5] if e_shift is None else None
    names = {m: "m", k: "k", ereg: "e"}
    if pairs and not per_channel:
        e.op(f"ldr {m}, %[m]")
        e.op(f"ldr {k}, %[k]")
    elif not per_channel:   # in the stream: one LDM instead of two loads, 8 bytes per block of 4 rows
        mk = sorted((m, k), key=POOL.index)
        e.op(f"ldmia {WP}!, {{{', '.join(mk)}}}")
        tokens.extend((names[reg], 0) for reg in mk)
    e.op(f"ldr {o}, %[o]")
    osize = out_bits // 8
    store = "strb" if osize == 1 else "strh"
    for r in range(rows):
        if per_channel:   # the row's constants
            regs = sorted((m, k) if ereg is None else (m, k, ereg), key=POOL.index)
            e.op(f"ldmia {WP}!, {{{', '.join(regs)}}}")
            tokens.extend((names[reg], r) for reg in regs)
        if pairs:
            a_lo, a_hi = accs[2 * (r // 2)], accs[2 * (r // 2) + 1]
            if r % 2 == 0:
                e.op(f"lsl {u2}, {a_lo}, #1")
                e.op(f"add {t}, {k}, {a_lo}, asr #31")
            else:
                e.op(f"sub {u2}, {a_hi}, {a_lo}")
                e.op(f"asr {u2}, {u2}, #7")
                e.op(f"add {t}, {k}, {u2}, asr #31")
            e.op(f"smmlar {t}, {u2}, {m}, {t}")
        else:
            a = accs[r]
            e.op(f"add {t}, {k}, {a}, asr #31")
            e.op(f"smmlar {t}, {a}, {m}, {t}")
        _clamp(e, t, ereg if e_shift is None else e_shift, out_bits, out_signed, lo, hi)
        # the first store moves the pointer to the next block: the others at negative offsets
        e.op(f"{store} {t}, [{o}], #{rows * osize}" if r == 0 else f"{store} {t}, [{o}, #-{(rows - r) * osize}]")
    e.op(f"str {o}, %[o]")
    for step in _sub_immediates(xbytes):
        e.op(f"{'sub' if _thumb2_modified_immediate(step) else 'subw'} {XP}, {XP}, #{step}")
    e.op(f"ldr {t}, %[wend]")
    e.op(f"cmp {WP}, {t}")
    e.op("bne 10b")
    per_block += e.count
    prog.lines = e.lines
    prog.rows, prog.passes, prog.tokens = rows, passes, tokens
    prog.instructions = per_block * sum(b for _, b in passes)
    return prog


def _thumb2_modified_immediate(v: int) -> bool:
    """Whether ``v`` is a Thumb-2 modified immediate (an 8-bit value, a replicated byte pattern, or a byte with its top
    bit set rotated): what a plain SUB with an immediate takes."""
    b = v & 0xFF
    if v < 256 or v in (b * 0x00010001, b * 0x01000100, b * 0x01010101):
        return True
    return any(((v << r) | (v >> (32 - r))) & 0xFFFFFFFF in range(128, 256) for r in range(1, 32))


def _sub_immediates(v: int) -> list[int]:
    """Immediates whose subtraction rewinds the pointer by ``v`` bytes: one modified immediate where it is one,
    else SUBW's 12-bit ones (a 2,070-feature input read as int16 pairs rewinds by 4,144 B: neither)."""
    if v <= 0:
        return []
    if _thumb2_modified_immediate(v):
        return [v]
    return [4095] * (v // 4095) + ([v % 4095] if v % 4095 else [])


def widenable_in_place(plan, graph, index: int) -> bool:
    """Whether node ``index``'s first input could be widened in place: an arena tensor (not the caller's
    const input) that no later node reads (ir/planner.py ``scratch_over_input``)."""
    x = plan.placements.get(graph.nodes[index].inputs[0])
    return x is not None and x.buffer == "arena" and x.last == index and graph.nodes[index].outputs[0] not in \
        {t for t, p in plan.placements.items() if p is x}


#: the stream's requantization tokens: SMMLAR's M and K, the shift
CONSTS = ("m", "k", "e")


def const_word(tok: tuple, r0: int, consts: dict) -> int:
    """The value of a requantization token (name, row in the block) of the block starting at row
    ``r0``: the row's constant, the tensor's when there is one, the last row's for padding rows."""
    vals = consts[tok[0]]
    return vals[min(r0 + tok[1], len(vals) - 1)] if len(vals) > 1 else vals[0]


def widen_instructions(n_in: int) -> int:
    """Instructions of the widening loop (template): 4 per input word, 2 per loop iteration of 2
    words, the remaining word unrolled; the partial last word in C (counted as 8)."""
    words = n_in // 4
    iters = words // 2
    return 4 * words + (2 * iters if iters > 1 else 0) + (8 if n_in % 4 else 0)


class DenseAsm(KernelVariant):
    """int16 weights (doubled), 4 rows per block (5 when the input is read on the fly)."""
    name = "dense_asm"
    ops = ("dense",)
    features = frozenset({"dsp"})
    priority = 12
    template = "ops_dsp/dense_asm.c.j2"
    modes = frozenset({"speed"})
    pairs = False
    #: the widened input may go on the stack when no arena gap holds it (speed trades RAM too)
    stack_buffer = True
    cost_kinds = {"dense_asm": ("steps", "blocks", "outputs", "const")}
    cost_reduced = {"dense_asm": ("steps", "outputs")}
    cost_work = {"dense_asm": (("steps", 2), ("outputs", 1))}

    def _rq(self, node, graph):
        rq = node.attrs.get("requant")
        if rq is None:
            return None, "int32 output"
        y = graph.tensors[node.outputs[0]]
        if y.dtype not in ("int8", "uint8", "int16"):
            return None, f"{y.dtype} output"
        bits, signed = 8 * y.itemsize, y.dtype.startswith("int")
        tlo, thi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not (tlo <= rq.lo <= thi and tlo <= rq.hi <= thi):
            return None, "clamp outside the output type"
        if bits == 16 and (rq.lo, rq.hi) != (tlo, thi):
            return None, "clamped int16 output"
        w = graph.constants[node.inputs[1]].astype(np.int64)
        b = graph.constants[node.inputs[2]].astype(np.int64)
        x = graph.tensors[node.inputs[0]]
        bounds = accumulator_bounds(b, w, x.dtype, 0)
        dbl = doubled_constants(rq, bounds)
        if dbl is None:
            return None, "requantization without the SMMLAR form"
        ms, ks, es = ([int(v[i]) for v in dbl] for i in range(3))
        per_channel = len(rq.multiplier) > 1
        consts = {"m": ms, "k": ks, "e": es}
        return (consts, per_channel, es[0] if len(set(es)) == 1 else None, bits, signed), None

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if x.dtype != "int8":
            # TFLite's double rounding, the only requantization taken here, comes with int8 inputs; uint8
            # ones (QONNX, after a ReLU) keep the dense / dense_int8 kernels
            return f"{x.dtype} input"
        w = graph.constants[node.inputs[1]]
        if w.shape[1] < 4:
            return "fewer than 4 inputs"
        if int(w.min(initial=0)) < -128 or int(w.max(initial=0)) > 127:
            return "weights outside the int8 range"
        _, why = self._rq(node, graph)
        if why:
            return why
        return self.form_refusal(node, graph)

    def form_refusal(self, node, graph) -> str | None:
        return None

    def xsource(self, node, graph, plan, stack_ok: bool | None = None) -> tuple[str, int | None]:
        """("buf", arena offset or None for the stack) or ("fly", None)."""
        stack_ok = self.stack_buffer if stack_ok is None else stack_ok
        n_in = graph.constants[node.inputs[1]].shape[1]
        need = 4 * len(kpairs(n_in))
        if plan is not None:
            index = next(i for i, n in enumerate(graph.nodes) if n.name == node.name)
            off = arena_gap(plan, index, need)
            if off is not None:
                return "buf", off
        if stack_ok and need <= STACK_SCRATCH_LIMIT // 4:
            return "buf", None
        return "fly", None

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]].astype(np.int64)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        n_out, n_in = w.shape
        (consts, per_channel, e_shift, bits, signed), _ = self._rq(node, graph)
        rq = node.attrs["requant"]
        xsrc, off = self.xsource(node, graph, plan)
        if xsrc == "fly" and plan is not None and in_place(plan, node.inputs[0], node.outputs[0]):
            xsrc = "buf"
        index = next(i for i, n in enumerate(graph.nodes) if n.name == node.name)
        # the pairs written over the int8 input they come from, from the top down (the planner pinned the
        # scratch at the input's offset: the input dies here)
        over_input = xsrc == "buf" and off is not None and plan is not None and scratch_in_place(plan, graph, index)
        ext = "sxtb16"   # int8 input (refusal)
        prog = generate(self.pairs, xsrc, ext, n_in, n_out, e_shift, bits, signed, rq.lo, rq.hi, per_channel)
        kp = kpairs(n_in)
        stream, wend = self.stream(prog, kp, w, bias, consts)
        words = len(kp)
        instr = prog.instructions + (widen_instructions(n_in) if xsrc == "buf" else 0)
        # what dense_asm (int16 weights) executes for the same layer: what balanced weighs flash against
        src16, _ = DenseAsm.xsource(self, node, graph, plan, stack_ok=True)
        prog16 = generate(False, src16, ext, n_in, n_out, e_shift, bits, signed, rq.lo, rq.hi, per_channel)
        instr16 = prog16.instructions + (widen_instructions(n_in) if src16 == "buf" else 0)
        form = "int8 weights, two rows per int16 half (SMLAD, SXTB16, SMLAD)" if self.pairs \
            else "int16 weights (doubled)"
        src = "input widened once into int16 pairs" if xsrc == "buf" else "input widened per block (SXTB16)"
        if over_input:
            src += f" over its own bytes ({4 * words} B of arena from the input's offset)"
        ctx = {"n_in": n_in, "n_out": n_out, "xsrc": xsrc, "ext": ext, "kwords": words,
               "quads": n_in // 4, "tail": n_in % 4, "kp": kp, "asm": prog.lines, "w_words": stream,
               "wend": wend, "m": consts["m"][0], "k": consts["k"][0], "uses_bias": False, "instructions": instr,
               "pairs": self.pairs, "xend": prog.xend, "rows": prog.rows, "instructions_int16": instr16,
               "passes": [(f, wend[2 * i], wend[2 * i + 1]) for i, (f, _) in enumerate(prog.passes)],
               "summary": f"{prog.rows} rows per block, {form}, {src}, "
                          f"SMMLAR requantization"}
        if over_input:
            ctx["scratch_in_place"] = True
        elif self.stack_buffer and plan is not None and (xsrc == "fly" or off is None) \
                and widenable_in_place(plan, graph, index):
            # on the stack, or read per block for lack of it: the build may plan these bytes in the arena over
            # the dying input instead (backends/cortexm/build.py), where that costs less RAM than the stack
            ctx["scratch_over_input"] = 4 * words
        if xsrc == "buf":
            ctx["scratch_bytes"] = 4 * words
        elif self.stack_buffer:   # no silent degradation: the input is read per block for lack of RAM
            why = f"input read per block: its int16 pairs ({4 * words} B) fit neither a free arena gap nor the stack budget"
            ctx["fallback"], ctx["summary"] = why, f"{ctx['summary']} ({why})"
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(stream))

    def stream(self, prog: Program, kp, w: np.ndarray, bias: np.ndarray, consts: dict) -> tuple[list[int], list[int]]:
        """The weight stream (int32 words in the order the statement reads them) and the word indices
        where each pass's weights begin and end."""
        out: list[int] = []
        ends = []
        pad = np.zeros(w.shape[1] + 1, np.int64)   # the last entry: a zero half (-1)

        def row_w(r):
            if r >= w.shape[0]:
                return pad
            return np.concatenate([w[r], [0]])

        for first, blocks in prog.passes:
            ends.append(len(out))
            for blk in range(blocks):
                out.extend(self.block_words(prog.tokens, first + blk * prog.rows, kp, row_w, bias, consts))
            ends.append(len(out))
        return out, ends

    def block_words(self, tokens, r0, kp, row_w, bias, consts) -> list[int]:
        """The words of the block whose first row is ``r0``, for the statement's ``tokens``."""
        words = []
        n_out = len(bias)
        bias2 = lambda r: 2 * int(bias[r]) if r < n_out else 0  # noqa: E731
        for tok in tokens:
            if tok[0] == "init":
                words.append(bias2(r0 + tok[1]))
            elif tok[0] in CONSTS:
                words.append(const_word(tok, r0, consts))
            else:
                _, j, u = tok
                lo, hi = kp[j]
                wr = row_w(r0 + u)
                words.append(int(pair_words(2 * wr[lo], 2 * wr[hi])))
        return [v - 2**32 if v >= 2**31 else v for v in words]

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """SMLAD steps (k-pairs times rows, padded to whole blocks of 4), blocks, outputs."""
        n_in = int(np.prod(info["in"]))
        n_out = int(np.prod(info["out"]))
        rows = 4
        blocks = -(-n_out // rows)
        return next(iter(self.cost_kinds)), {"steps": blocks * rows * len(kpairs(n_in)), "blocks": blocks,
                                             "outputs": n_out, "const": 1}


class DensePairs(DenseAsm):
    """int8 weights, two rows per int16 half."""
    name = "dense_asm_int8"
    priority = 11
    modes = frozenset({"size", "balanced", "speed"})
    pairs = True
    stack_buffer = False
    cost_kinds = {"dense_asm_int8": ("steps", "blocks", "outputs", "const")}
    cost_reduced = {"dense_asm_int8": ("steps", "outputs")}
    cost_work = {"dense_asm_int8": (("steps", 2), ("outputs", 1))}

    def form_refusal(self, node, graph) -> str | None:
        w = graph.constants[node.inputs[1]].astype(np.int64)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        x = graph.tensors[node.inputs[0]]
        n_out = w.shape[0]
        hi_rows = w[1::2]
        lo_rows = w[0:n_out - n_out % 2:2]
        # either sends the layer to dense_int8, slower: listed as a fallback
        if np.any((hi_rows == -128) & (lo_rows < 0)):
            return Fallback("a weight of -128 over a negative one (int16 half out of range)")
        b = accumulator_bounds(bias[1::2], hi_rows, x.dtype, 0)
        if b.size and int(b.max()) >= PAIR_BOUND:
            return Fallback(f"accumulator bound {int(b.max())} of 2^23 or more (rows in pairs)")
        return None

    def block_words(self, tokens, r0, kp, row_w, bias, consts) -> list[int]:
        words = []
        n_out = len(bias)
        bv = lambda r: int(bias[r]) if r < n_out else 0  # noqa: E731
        for tok in tokens:
            if tok[0] == "init":
                a = tok[1]
                lo_r = r0 + 2 * (a // 2)
                if a % 2 == 0:
                    words.append(bv(lo_r))
                else:   # acc_h starts at bias_a + 256 bias_b (mod 2^32)
                    words.append((bv(lo_r) + 256 * bv(lo_r + 1)) % 2**32)
            elif tok[0] in CONSTS:
                words.append(const_word(tok, r0, consts))
            else:
                _, j, u = tok
                lo, hi = kp[j]
                wa, wb = row_w(r0 + 2 * u), row_w(r0 + 2 * u + 1)
                h_lo = int(wa[lo]) + 256 * int(wb[lo])
                h_hi = int(wa[hi]) + 256 * int(wb[hi])
                words.append(int(pair_words(h_lo, h_hi)))
        return [(v % 2**32) - 2**32 if (v % 2**32) >= 2**31 else v % 2**32 for v in words]

    def flash_bytes(self, sel, node, graph) -> int:
        # the stream replaces the layer's int8 weights and int32 biases (both compiled out)
        own = graph.constants[node.inputs[1]].nbytes + graph.constants[node.inputs[2]].nbytes
        return max(0, sel.weight_bytes - own)

    def instructions_saved_by_int16(self, sel) -> int:
        return max(0, sel.ctx["instructions"] - sel.ctx["instructions_int16"])


VARIANTS = (DenseAsm(), DensePairs())
