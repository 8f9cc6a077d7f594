"""DSP depthwise kh x 3 with int8 weights in flash (``--optimize size|balanced``): dw3's int16 ring of
input rows, but one record per channel (not one per ring rotation) holding each kernel row's three
weights in one word, widened in registers by SXTB16 / SXTB16 ROR #8; up to five neighbouring outputs of a
channel per step, six with the SMMLA epilogue of scaled int16 records (templates/cortexm/ops_dsp/dw3_int8.c.j2,
docs/kernels.md)."""
from __future__ import annotations

import functools

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import Selection
from .common import (Int8WeightsRefusal, byte_words, doubled_constants, doubled_rq, extend_insn,  # noqa: F401
                     offset_word, pair_words, requant_ctx, residual_ctx)
from .dw3 import Dw3, ring_width

#: at most this many outputs of one channel per step of the assembly loop (13 registers: P, Q, X, five
#: accumulators, two ring words, the record, ring and output pointers)
MAX_BLOCK = 5
#: with the SMMLA epilogue (scaled records: X is read only by the loop's end test) one more: X holds the second
#: ring word and each accumulator is requantized in place, so six accumulators fit the 13 registers
MAX_BLOCK_SMMLA = 6
#: registers of the assembly loop that LDM lists name (ascending): the unpacked weight pair P, the
#: weight word / second pair Q, the third requantization constant X, the bias / accumulator A0
REG_P, REG_Q, REG_X, REG_A0 = "r4", "r5", "r6", "r8"
#: instructions dw3_int8_ram spends per channel widening its int8 records into the arena (measured on the M4:
#: VWW's 6x6x128 layers; per kernel row SXTB16 (ROR #8), three SMULxB by the channel's scale and two PKHBT)
UNPACK_PER_CHANNEL = 42
#: a bit of the last channel's e - 1 word that ends the channel loop (ASR by a register uses its low byte)
LAST_CHANNEL = 0x100


def row_word(w0: int, w1: int, w2: int, stride: int) -> tuple[int, int, int, int]:
    """The four bytes of a kernel row's weight word: SXTB16 gives (w0, w1); SXTB16 ROR #8 gives
    (w1, w2) for stride 1 (the odd output's pair) or (w2, 0) for stride 2."""
    return (w0, w1, w1, w2) if stride == 1 else (w0, w2, w1, 0)


def row_macs(n: int, stride: int, base: int, first: bool, pairs: bool = True, t1: str = "t1") -> list[str]:
    """Assembly of one kernel row for a block of ``n`` outputs of one channel: the ring words at byte
    offset ``base`` from ``tp`` and the MACs with the row's pairs P = (w0, w1), Q (row_word).

    Output k starts at column e = k * stride: even e is SMLAD(word e/2, P) + w2 * bottom(word e/2 + 1);
    odd e (stride 1) is top(word (e-1)/2) * w0 + SMLAD(word (e+1)/2, Q). The words come two at a time
    (LDRD into t0, t1; a last odd one by LDR), or with ``pairs`` False (offsets beyond LDRD's 1020) one
    at a time. In the first row processed every accumulator starts from
    the bias in a0, so there the words go in descending order and a0's own MAC comes last in each
    word's group: every other accumulator reads a0 before a0 changes. ``t1``: the operand that holds the second
    word (X in a six-output step).
    """
    w2insn = "smlabt" if stride == 1 else "smlabb"
    groups: dict[int, list[tuple[int, str, str]]] = {}
    for k in range(n):
        e = k * stride
        if e % 2 == 0:
            uses = [(e // 2, "smlad", "P"), (e // 2 + 1, w2insn, "Q")]
        else:
            uses = [(e // 2, "smlatb", "P"), (e // 2 + 1, "smlad", "Q")]
        for m, insn, reg in uses:
            groups.setdefault(m, []).append((k, insn, reg))
    words = sorted(groups)                       # consecutive from 0
    step = 2 if pairs else 1
    loads = [tuple(words[i:i + step]) for i in range(0, len(words), step)]
    if first:
        loads.reverse()
    started: set[int] = set()
    lines = []
    for pair in loads:
        if len(pair) == 2:
            lines.append(f"ldrd %[t0], %[{t1}], [%[tp], #{base + 4 * pair[0]}]")
        else:
            lines.append(f"ldr %[t0], [%[tp], #{base + 4 * pair[0]}]")
        for m in (sorted(pair, reverse=first)):
            t = "t0" if m == pair[0] else t1
            for k, insn, reg in sorted(groups[m], key=lambda u: u[0] == 0):
                addend = f"a{k}" if (k in started or not first) else "a0"
                started.add(k)
                lines.append(f"{insn} %[a{k}], %[{t}], %[{reg}], %[{addend}]")
    return lines


def block_asm(n: int, stride: int, kh: int, rot: int, wp: int, cs: int, oc: int, out_size: int,
              sat: str, bits: int, lo: int | None, hi: int | None, form: str = "smlal",
              shift: int | None = None, wide: bool = False, signed_round: bool = True) -> list[str]:
    """The channel loop of a block of ``n`` outputs for ring rotation ``rot`` (kernel row ky in ring
    slot (ky + rot) mod kh): per channel, LDM of row 0's weight word and the bias, per kernel row 2
    SXTB16, the ring loads and MACs, LDM of the requantization constants, n epilogues. The loop ends
    after the channel whose shift word carries LAST_CHANNEL (ASR reads only its low byte).

    The epilogue ``form`` is the one-SMLAL form "smlal" (M, Ahi, e - 1), or the shorter SMMLAR form of
    :func:`doubled_rq` (M, 2 Ahi, e) on a doubled accumulator: "smmlar" where the ring holds 2 (x - zp)
    and the record 2 * bias (stride 1: one input element per output to double), "smmlar_lsl" where
    each accumulator is doubled by LSL (strides that bring in more input per output);
    ``shift``: every channel's e, folded into SSAT/USAT's shift. ``wide``: the record holds each kernel
    row's two int16 pairs (dw3_wide), loaded by one LDM per row instead of LDR + 2 SXTB16. "smmla": dw3_wide's
    records scaled per channel (:func:`scaled_constants`): SMMLA with (M, K) and SSAT by the common ``shift``.
    ``signed_round`` False: the rounding term of a negative accumulator (s in :func:`doubled_rq`) is left out,
    which :func:`sign_term_needed` allows where the clamp's floor is at or above the output zero point: one
    instruction fewer per output."""
    st = "strb" if out_size == 1 else "strh"
    # more outputs than MAX_BLOCK (the SMMLA form only): X is the second ring word, each accumulator its own result
    t1 = "X" if n > MAX_BLOCK else "t1"
    if n > MAX_BLOCK and form != "smmla":
        raise ValueError(f"{n} outputs per step need the SMMLA epilogue")
    # LDRD reaches 1020 bytes (imm8 x 4): the last ring row's last word must be within it
    pairs = 2 * (kh - 1) * wp + 4 * ((n - 1) * stride // 2 + 1) <= 1020
    lines = ["1:", "ldmia %[r]!, {%[P], %[Q], %[a0]}" if wide else "ldmia %[r]!, {%[Q], %[a0]}"]
    for ky in range(kh):
        if wide:
            if ky:
                lines.append("ldmia %[r]!, {%[P], %[Q]}")
        else:
            if ky:
                lines.append("ldr %[Q], [%[r]], #4")
            lines += ["sxtb16 %[P], %[Q]", "sxtb16 %[Q], %[Q], ror #8"]
        lines += row_macs(n, stride, 2 * ((ky + rot) % kh) * wp, ky == 0, pairs, t1)
    lines = step_ring_pointer(lines, 2 * cs)
    lines.append("ldmia %[r]!, {%[P], %[Q], %[X]}")
    for k in list(range(1, n)) + [0]:
        a = f"%[a{k}]"
        res = a if n > MAX_BLOCK else "%[t1]"
        if form == "smmla":
            lines += [f"smmla {res}, {a}, %[P], %[Q]", f"{sat} {res}, #{bits}, {res}, asr #{shift}"]
        elif form != "smlal":
            if signed_round:
                lines.append("add %[t1], %[Q], " + a + ", asr #31")
            if form == "smmlar_lsl":
                lines.append(f"lsl {a}, {a}, #1")
            lines.append("smmlar %[t1], " + a + ", %[P], " + ("%[t1]" if signed_round else "%[Q]"))
            lines += [f"{sat} %[t1], #{bits}, %[t1], asr #{shift}"] if shift else \
                ["asr %[t1], %[t1], %[X]", f"{sat} %[t1], #{bits}, %[t1]"]
        else:
            lines += (["and %[t0], " + a + ", #0x80000000", "orr %[t0], %[t0], #0x40000000",
                       "add %[t1], %[Q], " + a + ", asr #31"] if signed_round else
                      ["mov %[t0], #0x40000000", "mov %[t1], %[Q]"])
            lines += ["smlal %[t0], %[t1], " + a + ", %[P]", "asr %[t1], %[t1], %[X]", f"{sat} %[t1], #{bits}, %[t1]"]
        if lo is not None:
            lines += [f"cmp {res}, #{lo}", "it lt", f"movlt {res}, #{lo}"]
        if hi is not None:
            lines += [f"cmp {res}, #{hi}", "it gt", f"movgt {res}, #{hi}"]
        lines.append(f"{st} {res}, [%[o], #{k * oc * out_size}]" if k else f"{st} {res}, [%[o]], #{out_size}")
    lines += [f"tst %[X], #{LAST_CHANNEL}", "beq 1b"]
    return lines


def sign_term_needed(rq) -> bool:
    """Whether the requantization of a negative accumulator needs its own rounding term (the ``ADD ..., ASR #31``
    of the epilogue). Without it the epilogue computes floor((acc M + A) / 2^(31 + e)) for every accumulator
    (contract.fast_double_rounding's form for acc >= 0): for acc < 0, acc M <= -2^30 cancels A's 2^30, so
    the code stays at or below the zero point, as TFLite's is. Where the clamp's floor is at or above the
    zero point (a fused ReLU or ReLU6) both become that floor, so only layers without one need the term."""
    return rq.lo < rq.zero_point


def scaled_constants(rq, dbl, bounds, weights: np.ndarray, bias: np.ndarray) -> tuple[list[int], int] | None:
    """Per channel the power-of-two scale j_c of dw3_wide's int16 records that gives every channel one shift,
    or None. Channel c's weights and bias are stored times 2^j_c, j_c = 2 + E - e_c (E the largest e of
    doubled_constants), and SMMLA (no rounding) with (M, K_c), K_c = 2^(j_c - 1) (2 Ahi) + 2^(j_c - 2), gives
    floor(2^j_c num / 2^32) for num = acc M + Ahi 2^32 + 2^30, so an arithmetic shift by E + 1, the same for
    all channels, finishes: SSAT's own shift (num without the negative accumulator's term: only under a clamp
    floor at or above the zero point, sign_term_needed). Needs 2^j_c w in int16, 2^j_c acc and K_c in int32
    and |2^j_c num| < 2^63. Returns (the K_c, E + 1)."""
    if not dbl or sign_term_needed(rq):
        return None
    es = [e for _, _, e in dbl]
    if len(set(es)) == 1:
        return None          # one shift already: the SMMLAR form folds it into SSAT
    top = max(es)
    ks = []
    for c, (m, k2, e) in enumerate(dbl):
        j = 2 + top - e
        wmax = int(np.abs(weights[..., c]).max(initial=0)) << j
        kc = (k2 << (j - 1)) + (1 << (j - 2))
        num = int(bounds[c]) * m + abs(k2 // 2) * 2**32 + 2**31 + 2**30
        if wmax > 2**15 - 1 or (int(bounds[c]) << j) >= 2**31 or abs(int(bias[c]) << j) >= 2**31 \
                or not -(2**31) <= kc < 2**31 or (num << j) >= 2**63:
            return None
        ks.append(kc)
    return ks, top + 1


def step_ring_pointer(lines: list[str], step: int) -> list[str]:
    """Advance ``tp`` to the next channel's ring rows: post-indexed on the load at offset 0 when
    every later offset fits a negative imm8 (Thumb-2 LDR: -255..255 around a write-back), else ADDW."""
    offsets = [int(line.rsplit("#", 1)[1].rstrip("]")) for line in lines if "[%[tp], #" in line]
    if step + max(offsets) > 255 or 0 not in offsets:
        return lines + [f"addw %[tp], %[tp], #{step}"]
    out, stepped = [], False
    for line in lines:
        if "[%[tp], #" in line:
            head = line.split("[%[tp], #")[0]
            off = int(line.rsplit("#", 1)[1].rstrip("]"))
            if not stepped and off == 0:
                line, stepped = f"{head}[%[tp]], #{step}", True
            elif stepped:
                line = f"{head}[%[tp], #{off - step}]"
        out.append(line)
    return out


@functools.lru_cache(maxsize=None)
def step_instructions(n: int, stride: int, wide: bool = False, smmla: bool = False) -> int:
    """Instructions of one channel step of n outputs (kh = 3, a narrow ring): what the row plan minimises;
    ``smmla``: the SMMLA epilogue of scaled records (one shift for all channels)."""
    if smmla:
        return len(block_asm(n, stride, 3, 0, 8, 24, 8, 1, "ssat", 8, None, None, form="smmla", shift=9,
                             wide=wide, signed_round=False)) - 1
    return len(block_asm(n, stride, 3, 0, 8, 24, 8, 1, "ssat", 8, None, None, wide=wide)) - 1


@functools.lru_cache(maxsize=None)
def blocks(ow: int, stride: int, wide: bool = False, smmla: bool = False) -> tuple[tuple[int, int, int], ...]:
    """(first column, columns, outputs per step) of a row: the steps of 1..MAX_BLOCK outputs (MAX_BLOCK_SMMLA
    with the SMMLA epilogue, ``smmla``) with the fewest instructions in all (dynamic programming over
    step_instructions). With stride 1 only the last step may be odd, so that every step's ring loads but the
    last start on a word boundary and no step reads past the ring row."""
    best: list[tuple[int, tuple[int, ...]]] = [(0, ())]
    for w in range(1, ow + 1):
        cands = []
        for n in range(1, min(MAX_BLOCK_SMMLA if smmla else MAX_BLOCK, w) + 1):
            cost, seq = best[w - n]
            if stride == 1 and any(k % 2 for k in seq):  # an odd step so far: it must stay the last
                continue
            cands.append((cost + step_instructions(n, stride, wide, smmla), len(seq) + 1, seq + (n,)))
        cost, _, seq = min(cands)
        best.append((cost, seq))
    seq = sorted(best[ow][1], key=lambda n: (n % 2 if stride == 1 else 0, -n))  # even steps first
    out, ox = [], 0
    for n in seq:
        if out and out[-1][2] == n:
            out[-1] = (out[-1][0], out[-1][1] + n, n)
        else:
            out.append((ox, n, n))
        ox += n
    return tuple(out)


def wpad_of(g: dict) -> int:
    """int16 columns of a ring row for the geometry ``g``."""
    return ring_width(g["ow"], g["iw"], g["sw"], g["pad_l"])


class Dw3Int8(Int8WeightsRefusal, Dw3):
    name = "dw3_int8"
    # above dw3: under size and balanced the int8 records go first; under speed dw3_wide, else dw3
    priority = 31
    modes = frozenset({"size", "balanced"})
    template = "ops_dsp/dw3_int8.c.j2"
    cost_kinds = {"dw3_int8": ("tr4", "tr1", "rows_loaded", "ring", "outputs_kh", "outputs", "steps_kh", "steps",
                               "colsteps", "rows", "const")}
    cost_reduced = {"dw3_int8": ("outputs_kh", "tr4", "tr1")}
    cost_work = {"dw3_int8": (("outputs_kh", 3),)}
    #: the record holds int16 pairs of doubled weights (dw3_wide) instead of int8 weight words
    wide = False

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        a = node.attrs
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        kh, oc = g["kh"], g["oc"]
        rq = a.get("requant")
        rqc = requant_ctx(rq, oc)
        y = graph.tensors[node.outputs[0]]
        cs = kh * wpad_of(g)
        # the channel loop in assembly: one output per input channel, the requantization with SSAT/USAT;
        # LDR/STR immediate offsets (imm12) bound the ring and the output row
        use_asm = (a["depth_multiplier"] == 1 and not a.get("residual") and rqc.get("fast")
                   and y.dtype in ("int8", "uint8", "int16", "uint16") and 2 * cs + 16 < 4096
                   and MAX_BLOCK * g["oc"] * y.itemsize < 4096)
        # there, the accumulator is doubled for the shorter SMMLAR epilogue (doubled_constants) when every
        # channel's accumulator bound allows it: the ring holds 2 (x - zp) and the records 2 * bias, or
        # (wide) the records hold doubled int16 weights and bias
        zp = x.zero_point
        info_x = np.iinfo(x.dtype)
        x_abs = max(zp - int(info_x.min), int(info_x.max) - zp)
        bounds = np.abs(bias) + np.abs(w).sum(axis=(0, 1)) * x_abs
        dbl = doubled_constants(rq, bounds) if use_asm else None
        # doubling in the ring costs half an instruction per input element (a second SXTAB16 per word),
        # LSL one per output: the ring for stride 1 x 1 only; wide records double the weights instead (free)
        in_ring = bool(dbl) and g["sh"] * g["sw"] == 1 and not self.wide
        in_weights = bool(dbl) and self.wide
        # wide records scaled per channel by a power of two so that every channel shifts alike (SSAT's shift)
        scaled = scaled_constants(rq, dbl, bounds, w, bias) if in_weights else None
        scale = [1 << (2 + scaled[1] - 1 - e) for _, _, e in dbl] if scaled else [2] * oc
        # one record per output channel: row 0's weights, the bias, rows 1.. kh-1's, then (M, Ahi, e - 1) when
        # the one-SMLAL epilogue applies, or (M, 2 Ahi, e) for SMMLAR
        recs = []
        for c in range(oc):
            if self.wide:
                rows = []
                for ky in range(kh):
                    w0, w1, w2 = (scale[c] * int(v) for v in w[ky, :, c])
                    second = (w1, w2) if g["sw"] == 1 else (w2, 0)
                    rows.append([int(pair_words(w0, w1)), int(pair_words(*second))])
                rec = rows[0] + [int(bias[c]) * scale[c]] + [v for r in rows[1:] for v in r]
            else:
                words = [int(byte_words(*row_word(*(int(v) for v in w[ky, :, c]), g["sw"]))) for ky in range(kh)]
                rec = [words[0], int(bias[c]) * (2 if in_ring else 1)] + words[1:]
            if scaled:
                rec += [dbl[c][0], scaled[0][c], scaled[1]]
            elif dbl:
                rec += list(dbl[c])
            elif rqc.get("fast"):
                rec += rqc["frec"][3 * c:3 * c + 3] if rqc["fast_pc"] else rqc["frec"][:3]
            recs.append(rec)
        wpad = wpad_of(g)
        rots = sorted({(oy * g["sh"]) % kh for oy in range(g["oh"])})
        info = np.iinfo(y.dtype) if use_asm else None
        lo = rq.lo if use_asm and rq.lo > info.min else None     # bounds tighter than the storage type (a fused ReLU)
        hi = rq.hi if use_asm and rq.hi < info.max else None
        use_asm = use_asm and all(v is None or -255 <= v <= 255 for v in (lo, hi))
        # the SMMLA epilogue (scaled records) frees X for the MACs: steps of up to MAX_BLOCK_SMMLA outputs
        plan_blocks = blocks(g["ow"], g["sw"], self.wide, bool(use_asm and scaled))
        weights_desc = ("int16 pairs of doubled weights (one LDM per kernel row)" if self.wide
                        else "int8 weights (SXTB16)")
        ctx = {"g": g, "mult": a["depth_multiplier"], "wp": wpad, "rec_words": [v for r in recs for v in r],
               "rw": len(recs[0]), "rots": rots, "blocks": plan_blocks, "wide": self.wide,
               "scaled": bool(scaled), "scale_log2": [v.bit_length() - 1 for v in scale], "ext": extend_insn(x.dtype), "offset_word": offset_word(2 * zp if in_ring else zp), "zp": x.zero_point,
               "scratch_bytes": 2 * kh * g["ic"] * wpad, "uses_bias": False, "doubled": in_ring,
               "summary": f"kh x 3 stride {g['sw']}: input rows transposed to int16 "
                          f"{'2 (x - zp)' if in_ring else '(x - zp)'}{', SMMLAR requantization' if dbl else ''}, "
                          f"{weights_desc}, one record per channel, "
                          f"{'/'.join(str(n) for _, _, n in plan_blocks)} outputs per channel and step"}
        ctx.update(rqc)
        ctx.update(residual_ctx(node, graph))
        if use_asm:
            sat = "ssat" if info.min < 0 else "usat"
            shifts = {e for _, _, e in dbl} if dbl else set()
            shift = shifts.pop() if len(shifts) == 1 else None  # one for all channels: SSAT's own shift
            form = "smlal" if not dbl else "smmlar" if (in_ring or in_weights) else "smmlar_lsl"
            if scaled:
                form, shift = "smmla", scaled[1]
            ctx["asm"] = {
                (rot, n): block_asm(n, g["sw"], kh, rot, wpad, cs, g["oc"], y.itemsize, sat, 8 * y.itemsize,
                                    lo, hi, form=form, shift=shift, wide=self.wide,
                                    signed_round=sign_term_needed(rq))
                for rot in rots for _, _, n in ctx["blocks"]}
            ctx["asm_regs"] = {"P": REG_P, "Q": REG_Q, "X": REG_X, "a0": REG_A0}
            ctx["asm_t1_max"] = MAX_BLOCK
            ctx["rec_words"][-1] |= LAST_CHANNEL
            # per channel and step, what int16 records (dw3_wide) would save: LDR + 2 SXTB16 per kernel row
            # against one LDM, the LSL of each doubled accumulator, and the ring's doubling (a second
            # SXTAB16 per word of two input elements); what --optimize balanced spends flash on
            steps = g["oh"] * sum(cols // n for _, cols, n in plan_blocks) * oc
            lsl = g["oh"] * g["ow"] * oc if form == "smmlar_lsl" else 0
            ring_words = (min(g["ih"], (g["oh"] - 1) * g["sh"] + kh) * g["iw"] * g["ic"]) // 2 if in_ring else 0
            # and, where dw3_wide's records can be scaled to one shift for all channels, the ASR per output
            one_shift = g["oh"] * g["ow"] * oc if scaled_constants(rq, dbl, bounds, w, bias) else 0
            ctx["saved_by_int16"] = 2 * kh * steps + lsl + ring_words + one_shift if dbl else 0
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(ctx["rec_words"]))

    def instructions_saved_by_int16(self, sel) -> int:
        return 0 if self.wide else sel.ctx.get("saved_by_int16", 0)

    def flash_bytes(self, sel, node, graph) -> int:
        # the records replace the layer's weights and bias in flash (the reference copy is compiled out)
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes
                   - graph.constants[node.inputs[2]].nbytes)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts of the row transposition into the ring and of the channel steps (blocks; int16 records
        as where they take the SMMLA epilogue, which the MLPerf Tiny layers do: steps of up to six outputs)."""
        _, f = super().cost_features(info)
        oh, ow, oc = info["out"]
        kh, _ = info["kernel"]
        steps = sum(cols // n for _, cols, n in blocks(ow, info["stride"][1], self.wide, self.wide))
        for k in ("pairs_kh", "pairs", "odd_kh", "odd"):
            del f[k]
        f.update({"outputs_kh": oh * ow * oc * kh, "outputs": oh * ow * oc, "steps_kh": oh * steps * oc * kh,
                  "steps": oh * steps * oc, "colsteps": oh * steps})
        return self.name, f


class Dw3Wide(Dw3Int8):
    """dw3_int8's assembly channel loop on int16 records (``--optimize speed``, or balanced within its flash
    allowance): per kernel row the pairs (2 w0, 2 w1), (2 w1, 2 w2) (stride 2: (2 w2, 0)) that dw3_int8 widens
    from an int8 word by SXTB16, loaded by one LDM; the doubled weights and bias give the SMMLAR epilogue its
    doubled accumulator without doubling the ring (stride 1) or an LSL per output (stride 2). One 40-byte
    record per channel (3 x 3) against dw3's 40 bytes per channel and ring rotation."""

    name = "dw3_wide"
    # above dw3 and dw3_int8: offered under speed only (balanced reaches it through its flash allowance)
    priority = 32
    modes = frozenset({"speed"})
    cost_kinds = {"dw3_wide": Dw3Int8.cost_kinds["dw3_int8"]}
    cost_reduced = {"dw3_wide": Dw3Int8.cost_reduced["dw3_int8"]}
    cost_work = {"dw3_wide": Dw3Int8.cost_work["dw3_int8"]}
    wide = True

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        # only the assembly loop with the SMMLAR epilogue reads the doubled int16 records
        sel = Dw3Int8.select(self, node, graph, plan)
        if "asm" not in sel.ctx or not any("smmla" in line for line in next(iter(sel.ctx["asm"].values()))):
            return "no assembly channel loop with the SMMLA(R) epilogue for this layer (dw3's int16 records instead)"
        return None


class Dw3Int8Ram(Dw3Wide):
    """dw3_wide's channel loop with int8 weights in flash (``--optimize size|balanced``): the layer first widens
    its int8 records into dw3_wide's int16 records in free arena bytes beside the ring (about 42 instructions per
    channel), so flash keeps one 28-byte record per channel (dw3_int8's size) and the loop reads one LDM per kernel
    row, with one shift for every channel where scaled_constants allows. Only where the ring and the 40-byte
    records per channel fit an arena gap while the layer runs: it never adds RAM (else dw3_int8)."""

    name = "dw3_int8_ram"
    # above dw3_int8 (31) under size and balanced
    priority = 33
    modes = frozenset({"size", "balanced"})
    cost_kinds = {"dw3_int8_ram": Dw3Int8.cost_kinds["dw3_int8"]}
    cost_reduced = {"dw3_int8_ram": Dw3Int8.cost_reduced["dw3_int8"]}
    cost_work = {"dw3_int8_ram": Dw3Int8.cost_work["dw3_int8"]}

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        # widening costs about UNPACK_PER_CHANNEL instructions per channel once; dw3_int8's loop would spend
        # saved_by_int16 more (its weight unpacking per step, the ASR or LSL per output, the ring's doubling)
        saved = Dw3Int8().select(node, graph, plan).ctx.get("saved_by_int16", 0)
        cost = UNPACK_PER_CHANNEL * conv_geometry(node, graph)["oc"]
        if saved <= cost:
            return f"widening the records ({cost} instructions) would save only {saved} in the loop (dw3_int8 instead)"
        from .registry import arena_gap
        need = Dw3Int8.select(self, node, graph, plan).ctx["scratch_bytes"] + self.table_bytes(node, graph)
        if plan is None or arena_gap(plan, [n.name for n in graph.nodes].index(node.name), need) is None:
            return f"no free arena gap of {need} B for the ring and the widened records (dw3_int8 instead)"
        return None

    @staticmethod
    def table_bytes(node, graph) -> int:
        """RAM of the widened records: dw3_wide's (2 kh + 4) words per channel."""
        return 4 * (2 * conv_geometry(node, graph)["kh"] + 4) * conv_geometry(node, graph)["oc"]

    def select(self, node, graph, plan) -> Selection:
        sel = Dw3Int8.select(self, node, graph, plan)
        ctx = sel.ctx
        g = ctx["g"]
        kh, oc, rw = g["kh"], g["oc"], ctx["rw"]
        w = graph.constants[node.inputs[1]].astype(np.int64)
        # per channel in flash: each kernel row's bytes (w0, w1, w2, 0), then the record's bias (scaled), M, K and
        # its shift word with log2 of the channel's weight scale in bits 16-23 (the loop reads the low byte)
        flash = []
        for c in range(oc):
            rec = ctx["rec_words"][c * rw:(c + 1) * rw]
            rows = [int(byte_words(*(int(v) for v in w[ky, :, c]), 0)) for ky in range(kh)]
            flash += rows + [rec[2], rec[-3], rec[-2], rec[-1] | (ctx["scale_log2"][c] << 16)]
        ram = self.table_bytes(node, graph)
        ctx.update({"unpack": {"words": flash, "fw": kh + 4, "ring_bytes": ctx["scratch_bytes"]},
                    "scratch_bytes": ctx["scratch_bytes"] + ram,
                    "summary": ctx["summary"].replace("int16 pairs of doubled weights (one LDM per kernel row)",
                                                      f"int8 weights widened into {ram} B of int16 records in the "
                                                      "arena at the layer's start (one LDM per kernel row)")})
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(flash))

    def instructions_saved_by_int16(self, sel) -> int:
        # dw3_wide's records in flash run the same loop without the widening at the layer's start
        return UNPACK_PER_CHANNEL * sel.ctx["g"]["oc"]


VARIANTS = (Dw3Int8(), Dw3Wide(), Dw3Int8Ram())
