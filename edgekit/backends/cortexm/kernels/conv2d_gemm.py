"""DSP GEMM for convolutions (not depthwise): im2col of int16 pairs and a 3 pixel x 2 output
channel SMLAD micro-kernel (templates/cortexm/ops_dsp/conv2d_gemm.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from ....ir import contract
from ....ops._gemm import add_requantized
from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import (COMPACT_RECORD_MIN_KWORDS, accumulator_bounds, compact_records, doubled_constants, doubled_rq,
                     extend_insn, offset_word, pair_words, requant_ctx, residual_ctx, run_pairs, smmlar_ctx, valid_taps, wider_residual_in_place)

#: im2col block: pixels per block (the 3x2 micro-kernel: 3 pixels x 2 output channels).
GEMM_PIXELS = 3
#: output channels per micro-kernel step
GEMM_CHANNELS = 2
#: k-pair steps per iteration of the micro-kernels' loops.
GEMM_UNROLL = 4


#: int16 weights (--optimize speed): K of at most this many k-pairs runs as straight-line steps, without a loop
FULL_UNROLL_KWORDS = 33


#: --optimize speed (codegen's speed pass: conv2d_gemm_straight): the int16 GEMM's steps all straight-line up to
#: this many k-pairs, else in loops of SPEED_UNROLL steps: 3 loop instructions per 8 steps (64) go
SPEED_FULL_UNROLL_KWORDS = 97
SPEED_UNROLL = 48
#: the straight-line steps may add at most this share of the board's flash in code (STEP_CODE_BYTES per step:
#: LDM, LDRD and six SMLAD)
SPEED_CODE_SHARE = 0.05
STEP_CODE_BYTES = 32
#: the code budget where the board is not known
SPEED_CODE_DEFAULT = 64 * 1024
#: conv2d_gemm_2x2 (--optimize speed): code bytes per step of two k-pairs (two LDM, eight SMLAD) and of the rest
#: of its function (im2col, requantization, tail)
PAIR_STEP_CODE_BYTES = 40
PAIR_BASE_CODE_BYTES = 1024
#: conv2d_gemm_2x2 only for K of at least this many k-pairs (with a fused add: PAIR_MIN_KWORDS_RES): on shorter K
#: the requantization per block of 4 outputs instead of 6 costs more than the steps save (measured on mps2-an386
#: under speed: the VWW stand-in 7,109,354 / 7,086,033 / 7,090,401 instructions from K of 48 / 24 / 16 on, KWS's
#: K-32 pointwise layers 2,373,597 -> 2,302,453; ResNet-8's K-72 conv with the add 2,041,598 -> 2,009,525)
PAIR_MIN_KWORDS = 24
PAIR_MIN_KWORDS_RES = 48
#: ... and at most this many: the assembly steps back over a pair's im2col words (8 K bytes) with one SUBW and keeps
#: r7 at 8 K + 16 bytes from col (imm12 offsets)
PAIR_MAX_KWORDS = 509


def speed_unroll(kwords: int) -> int:
    """conv2d_gemm_straight's steps per loop iteration (the template runs one iteration, or none, as straight code)."""
    if kwords <= FULL_UNROLL_KWORDS:
        return unroll(kwords, full=True)
    return kwords - 1 if kwords <= SPEED_FULL_UNROLL_KWORDS else SPEED_UNROLL


def code_steps(kwords: int, u: int) -> int:
    """k-pair steps the micro-kernel's code holds after the first (conv2d_gemm.c.j2): the single ones and one
    loop body."""
    n = kwords - 1
    return n % u + (u if n // u else 0)


def loop_iterations(kwords: int, u: int) -> int:
    """Iterations of the micro-kernel's loop per call (none where it runs one: straight code)."""
    n = kwords - 1
    return n // u if n // u > 1 else 0


def unroll(kwords: int, full: bool = False) -> int:
    """k-pair steps per iteration of the micro-kernel's loop: twice as many for long K; with ``full`` (the int16
    variant) all the steps after the first where K is at most FULL_UNROLL_KWORDS (one iteration: no loop)."""
    if full and 2 < kwords <= FULL_UNROLL_KWORDS:
        return kwords - 1
    return 2 * GEMM_UNROLL if kwords > 6 * GEMM_UNROLL else GEMM_UNROLL


def asm_requant(d: dict, node, graph, records_in_stream: bool = True, residual_ok: bool = False) -> dict | None:
    """The requantization the GEMM's assembly does itself after the accumulation (templates/cortexm/ops_dsp/
    conv2d_gemm.c.j2 rq_asm): SMMLAR records (M, 2 Ahi, e) (per channel in the weight stream unless
    ``records_in_stream`` is False: the caller puts them there), int8 outputs, an even channel count, no fused
    residual add unless ``residual_ok`` (the caller adds asm_residual's part). The saturation and the clamp
    bounds inside the int8 range (None: none); None where the C epilogue (epilogue.j2) is needed."""
    if not (d.get("fast") and d.get("smmlar")) or (records_in_stream and not d.get("fast_pc")) \
            or (node.attrs.get("residual") and not residual_ok):
        return None
    # int8 outputs: what TFLite's double rounding comes with (uint8 outputs come from QONNX's single rounding)
    if graph.tensors[node.outputs[0]].dtype != "int8" or d["g"]["oc"] % 2:
        return None
    rq = node.attrs["requant"]
    if not -128 <= rq.lo <= rq.hi <= 127:
        return None
    return {"sat": "ssat", "lo": rq.lo if rq.lo > -128 else None, "hi": rq.hi if rq.hi < 127 else None}


def asm_residual(node, graph) -> dict | None:
    """The fused residual add inside the GEMM's assembly (conv2d_gemm.c.j2 rq_asm, after the conv's own
    requantization to its int8 code y): 2 s = (y << shift) + table[r] (the add's rescaled residual operand per
    code r, doubled, minus the conv's zero point rescaled), then the add's output requantization in the SMMLAR
    form (M, K, e) with SSAT's shift and the clamp. Applies where the add rescales y - zp_y by a shift alone, the
    residual is 8-bit and the output int8; taken only when it equals the add's arithmetic (ops/_gemm.py
    add_requantized) for every pair of codes (y, r). None where it does not apply."""
    res = node.attrs.get("residual")
    if not res or len(node.inputs) < 4 or res.get("requant") is None:
        return None
    rt = graph.tensors[node.inputs[3]]
    rq, ro = node.attrs["requant"], res["requant"]
    if rt.itemsize != 1 or graph.tensors[node.outputs[0]].dtype != "int8" or not -128 <= ro.lo <= ro.hi <= 127 \
            or not -128 <= rq.lo <= rq.hi <= 127:
        return None
    ra, rb = res["in_requant"]
    ys = np.arange(rq.lo, rq.hi + 1, dtype=np.int64)
    rs = np.arange(rt.qmin, rt.qmax + 1, dtype=np.int64)
    a_vals = contract.apply_requant(ys - rq.zero_point, ra)
    k = next((k for k in range(30) if np.array_equal(a_vals, (ys - rq.zero_point) << k)), None)
    if k is None:
        return None
    b_vals = contract.apply_requant(rs - rt.zero_point, rb)
    table = 2 * (b_vals - (rq.zero_point << k))
    dbl = doubled_constants(ro, [int(np.abs(a_vals).max() + np.abs(b_vals).max())])
    if dbl is None or np.abs(table).max() >= 2**31:
        return None
    m, k2, e = dbl[0]
    if not 1 <= e <= 31:
        return None
    got = np.clip(doubled_rq(((ys[:, None] << (k + 1)) + table[None, :]) // 2, m, k2, e), ro.lo, ro.hi)
    want = add_requantized(ys[:, None], rq.zero_point, (rq.lo, rq.hi), rs[None, :], rt.zero_point,
                           (rt.qmin, rt.qmax), ra, rb, ro)
    if not np.array_equal(got, want):
        return None
    return {"shift": k + 1, "m": int(m), "k": int(k2), "e": int(e), "table": [int(v) for v in table],
            "offset": -int(rt.qmin), "load": "ldrsb" if rt.dtype == "int8" else "ldrb",
            "lo": ro.lo if ro.lo > -128 else None, "hi": ro.hi if ro.hi < 127 else None}


#: ek_im2col3's estimated instructions: per block (call, position, checks), per kernel row, per input word (3
#: pixels); and the pixel-by-pixel copy's: per pixel and row, per tap (whole words per tap), per word
IM2COL3_BLOCK, IM2COL3_ROW, IM2COL3_WORD = 40, 12, 12
IM2COL1_ROW, IM2COL1_TAP, IM2COL1_WORD = 6, 9, 5
#: taken where its estimate is below this share of the pixel-by-pixel copy's
IM2COL3_GAIN = 0.9


def im2col3_share(oh: int, ow: int, iw: int, kw: int, sw: int, pad_l: int) -> float:
    """The share of a layer's 3-pixel blocks that ek_im2col3 takes (dsp_common.c.j2): whole blocks in one output
    row with every tap inside the input columns; it refuses the others (after its call) to the pixel-by-pixel copy."""
    npix = oh * ow
    blocks = range(0, npix, 3)
    taken = sum(1 for p0 in blocks if p0 + 3 <= npix and p0 % ow + 3 <= ow and (p0 % ow) * sw - pad_l >= 0
                and (p0 % ow) * sw - pad_l + 2 * sw + kw <= iw)
    return taken / len(blocks)


def im2col3_pays(kh: int, kw: int, ic: int, share: float = 1.0) -> bool:
    """Whether a block's im2col at once (ek_im2col3) is estimated to execute fewer instructions than three pixels'
    copies (short runs: the call costs more than it saves), where it takes ``share`` of the blocks
    (im2col3_share; each refused block pays the call and the three copies). A function of the shape alone."""
    words = kw * ic // 4
    taps = kw if ic % 4 == 0 else 0
    one = 3 * kh * (IM2COL1_ROW + IM2COL1_TAP * taps + IM2COL1_WORD * words)
    at_once = IM2COL3_BLOCK + share * kh * (IM2COL3_ROW + IM2COL3_WORD * words) + (1 - share) * one
    return at_once < IM2COL3_GAIN * one


def runs_of(kh: int, kw: int, ic: int, dil_w: int) -> tuple[list[tuple[int, int]], int]:
    """The runs of contiguous input bytes im2col copies per pixel, as (ky, kx of the run's
    first tap), and their length: a kernel row when there is no horizontal dilation, else one tap."""
    if dil_w == 1:
        return [(ky, 0) for ky in range(kh)], kw * ic
    return [(ky, kx) for ky in range(kh) for kx in range(kw)], ic


def im2col_features(info: dict) -> tuple[dict, int]:
    """The GEMM's im2col trip counts for a conv layer (layer_info ``info``): words widened, zero words of
    outside taps, kernel-row runs (valid ones), taps copied whole, byte tails and elements of partial runs;
    and K in k-pairs. Every kernel that fills conv2d_gemm's im2col buffer shares them."""
    ih, iw, ic = info["in"]
    oh, ow, _ = info["out"]
    kh, kw = info["kernel"]
    sh, sw = info["stride"]
    pt, pl = info["pad"][0], info["pad"][1]
    runs, run_len = runs_of(kh, kw, ic, info.get("dilation", (1, 1))[1])
    run_words = len(run_pairs(run_len))
    kwords = len(runs) * run_words
    npix = oh * ow
    vrows = valid_taps(oh, ih, kh, sh, pt)
    vcols = valid_taps(ow, iw, kw, sw, pl)             # taps inside the input, summed over ox
    full_cols = sum(1 for ox in range(ow) if ox * sw - pl >= 0 and ox * sw - pl + kw <= iw)
    tap_mode = ic % 4 == 0                             # whole words per tap, zero words for outside taps
    zero = (npix * kh - vrows * ow) * run_words + (vrows * (ow * kw - vcols) * (ic // 2) if tap_mode else 0)
    return {"im2col_words": npix * kwords, "zero_words": zero, "runs": npix * kh, "runs_valid": vrows * ow,
            "tap_iters": vrows * ow * kw if tap_mode else 0, "tail_runs": vrows * ow if run_len % 4 else 0,
            "partial_elems": vrows * (ow - full_cols) * kw * ic}, kwords


class ConvGemm(KernelVariant):
    name = "conv2d_gemm"
    ops = ("conv2d",)
    features = frozenset({"dsp"})
    priority = 10
    template = "ops_dsp/conv2d_gemm.c.j2"
    row_ranges = True
    cost_kinds = {"gemm": ("im2col_words", "zero_words", "runs", "runs_valid", "tap_iters", "tail_runs",
                           "partial_elems", "mk_loops4", "mk_loops8", "mk_rem", "mk_blocks", "outputs",
                           "plain_outputs", "blocks", "const")}
    cost_reduced = {"gemm": ("im2col_words", "mk_loops4", "mk_loops8", "outputs")}
    # MACs per micro-kernel loop iteration: pixels x channels x k-pairs x 2 (a single step: one k-pair; short K with
    # int16 weights runs single steps only)
    cost_work = {"gemm": (("mk_loops8", GEMM_PIXELS * GEMM_CHANNELS * 2 * 2 * GEMM_UNROLL),
                          ("mk_loops4", GEMM_PIXELS * GEMM_CHANNELS * 2 * GEMM_UNROLL),
                          ("mk_rem", GEMM_PIXELS * GEMM_CHANNELS * 2), ("outputs", 1))}
    # weights widened to int16 in flash (2 bytes per weight): only when the build asks for speed
    modes = frozenset({"speed"})
    int8_weights = False
    weight_form = "int16 weights"

    def claims(self, node) -> bool:
        return not node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        return wider_residual_in_place(node, graph, plan)

    def k_pair_order(self, nruns: int, rp: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """The im2col's k-pairs in column order, each two (run, byte of the run) halves (byte -1: a zero half):
        run by run, each in ``run_pairs`` order (the template's im2col lays them out so)."""
        return [((r, a), (r, b)) for r in range(nruns) for a, b in rp]

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (oc, kh, kw, ic)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        oc, kh, kw, ic = w.shape
        runs, run_len = runs_of(kh, kw, ic, g["dw"])
        rp = run_pairs(run_len)
        words_per_run = len(rp)
        k_pairs = self.k_pair_order(len(runs), rp)
        kwords = len(k_pairs)                                          # k-pairs per output pixel
        flat = w.reshape(oc, -1)                                       # (ky, kx, ic) order
        oc_pad = oc + (oc & 1)
        wp = np.zeros((oc_pad, kwords, 2), np.int64)
        for j, halves in enumerate(k_pairs):
            for half, (r, e) in enumerate(halves):
                if e < 0:
                    continue
                ky, kx0 = runs[r]
                if g["dw"] == 1:
                    kx, c = divmod(e, ic)
                else:
                    kx, c = kx0, e
                wp[:oc, j, half] = flat[:, (ky * kw + kx) * ic + c]
        # stream per channel pair: the two biases, the weights of the k-pairs in the order the
        # micro-kernel reads them, then (M, Ahi, e - 1) of both channels for the one-multiply requantization
        rq = node.attrs.get("requant")
        # the SMMLAR epilogue (ek_dsp_rq2: one instruction fewer per output) where the accumulators allow it
        rqc = smmlar_ctx(requant_ctx(rq, oc_pad), rq, accumulator_bounds(bias, flat, x.dtype, x.zero_point), oc_pad)
        # int16 weights: doubled in flash where they stay int16, so the accumulator is the doubled one the SMMLAR
        # epilogue needs and its LSL goes (one instruction per output; ek_dsp_rq2d)
        doubled = bool(rqc.get("smmlar")) and not self.int8_weights and (not w.size or int(np.abs(w).max()) < 2**14)
        if doubled:
            wp, bias = 2 * wp, 2 * bias
        pairs = self.channel_pair_words(wp)
        b2 = np.array(bias.tolist() + [0] * (oc_pad - oc), np.int64).reshape(-1, 2)
        parts = [b2, pairs]
        if rqc.get("fast") and rqc.get("fast_pc"):
            parts.append(np.array(rqc["frec"], np.int64).reshape(-1, 6))
        stream = np.concatenate(parts, axis=1).reshape(-1)
        ctx = {
            "g": g, "runs": runs, "run_len": run_len, "words_per_run": words_per_run, "kwords": kwords,
            "oc_pad": oc_pad, "npix": g["oh"] * g["ow"], "ext": extend_insn(x.dtype),
            "offset_word": offset_word(x.zero_point), "tap_mode": ic % 4 == 0,
            # the 3 pixels' im2col at once (ek_im2col3) where a block lies inside the input: whole words per run,
            # the geometry in int16 (its table), runs long enough to pay for the call
            "im2col3": g["dw"] == 1 and run_len % 4 == 0 and GEMM_PIXELS == 3
            and max(g["oh"] * g["ow"], g["ih"] * g["iw"], g["ic"]) < 2**15 and im2col3_pays(kh, kw, ic, im2col3_share(g["oh"], g["ow"], g["iw"], kw, g["sw"],
                                                           g["pad_l"])),
            "unroll": unroll(kwords, full=not self.int8_weights),
            "pixels": GEMM_PIXELS, "int8_weights": self.int8_weights, "acc_doubled": doubled,
            "w_words": stream.tolist(), "uses_bias": False, "rq_table": None,
            "scratch_bytes": 4 * GEMM_PIXELS * kwords,
            "tail_bytes": GEMM_PIXELS * oc * graph.tensors[node.outputs[0]].itemsize
            if (g["oh"] * g["ow"]) % GEMM_PIXELS else 0,
            "summary": f"im2col {kwords} int16 pairs/pixel, {self.weight_form}, {GEMM_PIXELS}x2 SMLAD micro-kernel",
        }
        ctx.update(rqc)
        ctx["asm_rq"] = asm_requant(ctx, node, graph)
        # the fused add in the assembly: this template's (subclasses with their own templates keep the C epilogue)
        res_asm = asm_residual(node, graph) if node.attrs.get("residual") and self.template == ConvGemm.template \
            else None
        if res_asm and rqc.get("fast_pc"):
            ctx["asm_rq"] = asm_requant(ctx, node, graph, residual_ok=True)
            if ctx["asm_rq"]:
                # the add's M and K after each channel pair's records (read with them), the residual's table
                ctx["asm_rq"]["res"] = res_asm
                stream = np.concatenate([stream.reshape(oc_pad // 2, -1),
                                         np.tile(np.array([res_asm["m"], res_asm["k"]], np.int64), (oc_pad // 2, 1))],
                                        axis=1).reshape(-1)
                ctx["w_words"] = stream.tolist()
        ctx.update(residual_ctx(node, graph))
        ctx.update(residual_table(node, graph, ctx))
        if node.attrs.get("residual"):
            ctx["summary"] += ", fused residual add" + (" in the assembly" if ctx["asm_rq"] and ctx["asm_rq"].get("res")
                                                         else "")
        # one table of the residual's 256 codes: the assembly's (asm_rq res) or the C epilogue's
        table = ctx["asm_rq"]["res"]["table"] if ctx["asm_rq"] and ctx["asm_rq"].get("res") else ctx.get("res_table", ())
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * (stream.size + len(table)))

    def compact_records(self, sel: Selection, min_kwords: int = COMPACT_RECORD_MIN_KWORDS) -> bool:
        """Switch ``sel`` (int8 weights, rows of at least ``min_kwords`` k-pairs) to compact
        requantization records: per channel pair (M, M, both shifts as int16 halves) instead of 6 words, and
        a table of Ahi by shift (common.compact_records). About half an instruction per output more, so
        --optimize size takes them always and balanced only to meet the default flash goal (there for
        rows of any length: codegen._compact_for_flash_goal)."""
        d = sel.ctx
        c = compact_records(d) if self.int8_weights and d["kwords"] >= min_kwords else None
        if c is None or d.get("rq_table"):
            return False
        npairs = d["oc_pad"] // 2
        rec = 8 if d.get("asm_rq") and d["asm_rq"].get("res") else 6          # the records (and the add's M, K)
        rows = np.array(d["w_words"], np.int64).reshape(npairs, -1)[:, :-rec]  # biases and weights of each pair
        s2 = np.array(c["s"], np.int64).reshape(-1, 2)
        stream = np.concatenate([rows, np.array(c["m"], np.int64).reshape(-1, 2), s2[:, :1] | (s2[:, 1:] << 16)],
                                axis=1).reshape(-1)
        # the in-assembly requantization (asm_rq) reads the full records: compact ones take the C epilogue
        d.update(w_words=stream.tolist(), rq_table=c["h"], asm_rq=None,
                 summary=d["summary"].replace(" add in the assembly", " add") + ", compact requantization records")
        sel.weight_bytes = 4 * (stream.size + len(c["h"]))
        return True

    @classmethod
    def speed_pass(cls, selections: list, board) -> None:
        """--optimize speed (codegen): the conv2d_gemm layers' micro-kernels as straight-line code: first as
        conv2d_gemm_2x2 (pixel pairs, two k-pairs per step: 10 instructions per 16 MACs instead of 8 per 12),
        then the others as conv2d_gemm_straight, those that save the most instructions per byte of code first,
        while the added code stays within SPEED_CODE_SHARE of the board's flash."""
        flash = getattr(getattr(board, "flash", None), "length", None)
        budget = int(SPEED_CODE_SHARE * flash) if flash else SPEED_CODE_DEFAULT
        budget = ConvGemmPairs.take(selections, budget)
        gains = []
        for i, sel in enumerate(selections):
            d = sel.ctx
            if sel.kind != ConvGemm.name or d.get("nblocks", 1) > 1:
                continue
            kw, u = d["kwords"], speed_unroll(d["kwords"])
            extra = STEP_CODE_BYTES * (code_steps(kw, u) - code_steps(kw, d["unroll"]))
            calls = -(-d["npix"] // d["pixels"]) * (d["oc_pad"] // 2)
            saved = 3 * calls * (loop_iterations(kw, d["unroll"]) - loop_iterations(kw, u))
            if saved > 0 and extra > 0:
                gains.append((-saved / extra, i, sel, u, extra))  # ties in graph order (not id(): run to run)
        for _, _, sel, u, extra in sorted(gains, key=lambda g: (g[0], g[1])):
            if extra <= budget:
                budget -= extra
                sel.kind = ConvGemmStraight.name
                sel.ctx.update(unroll=u, summary=sel.ctx["summary"] + ", straight-line steps (speed)")

    def channel_pair_words(self, wp: np.ndarray) -> np.ndarray:
        """(oc_pad // 2, words) int32 weight words per output channel pair, from the weights of
        each channel's k-pairs ``wp`` (oc_pad, kwords, 2): per k-pair j, the int16 pair of
        channel c, then that of c + 1 (one LDRD)."""
        oc_pad, kwords, _ = wp.shape
        words = pair_words(wp[..., 0], wp[..., 1])                     # (oc_pad, kwords)
        return words.reshape(oc_pad // 2, 2, kwords).transpose(0, 2, 1).reshape(oc_pad // 2, -1)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts of the im2col copies and of the micro-kernel."""
        f, kwords = im2col_features(info)
        oc = info["out"][2]
        npix = info["out"][0] * info["out"][1]
        blocks = -(-npix // GEMM_PIXELS)
        ocp = -(-oc // GEMM_CHANNELS)
        u = unroll(kwords, full=not self.int8_weights)
        # int16 weights and short K: every step after the first straight-line, counted as single steps (no loop)
        straight = not self.int8_weights and 2 < kwords <= FULL_UNROLL_KWORDS
        loops = 0 if straight else blocks * ocp * (kwords // u)
        return self.cost_kind, {
            **f, "mk_loops4": loops if u == GEMM_UNROLL else 0,
            "mk_loops8": loops if u == 2 * GEMM_UNROLL else 0,
            "mk_rem": blocks * ocp * (kwords - 1 if straight else kwords % u),
            "mk_blocks": blocks * ocp, "outputs": npix * oc,
            "plain_outputs": npix * oc if info.get("rq") in (None, "none") else 0, "blocks": blocks, "const": 1}

    @property
    def cost_kind(self) -> str:
        return next(iter(self.cost_kinds))

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        # the im2col copy: whole words per tap (ic % 4 == 0) or byte tails; the epilogue's requantization
        ic = info["in"][2]
        return ["ic4" if ic % 4 == 0 else f"ic{ic % 4}", f"rq-{info.get('rq') or 'none'}"]


class ConvGemmStraight(ConvGemm):
    """conv2d_gemm under --optimize speed with its k-pair steps as straight-line code (speed_unroll: no loop up to
    SPEED_FULL_UNROLL_KWORDS k-pairs, else loops of SPEED_UNROLL steps): the loop's three instructions per eight
    steps go for STEP_CODE_BYTES of code per step. Never selected itself: codegen's speed pass
    (ConvGemm.speed_pass) turns conv2d_gemm layers into it within a share of the board's flash. Its latency-model
    features are conv2d_gemm's, its steps counted as single steps (a 48-step iteration as six of eight)."""
    name = "conv2d_gemm_straight"
    modes = frozenset()
    cost_kinds = {"gemm_straight": ConvGemm.cost_kinds["gemm"]}
    cost_reduced = {"gemm_straight": ConvGemm.cost_reduced["gemm"]}
    cost_work = {"gemm_straight": ConvGemm.cost_work["gemm"]}

    def cost_features(self, info: dict) -> tuple[str, dict]:
        kind, f = ConvGemm.cost_features(self, info)
        kwords = im2col_features(info)[1]
        loops = loop_iterations(kwords, speed_unroll(kwords))
        calls = f["mk_blocks"]
        return kind, {**f, "mk_loops4": 0, "mk_loops8": 0, "mk_rem": calls * (kwords - 1 - loops * SPEED_UNROLL),
                      **({"mk_loops8": calls * loops * SPEED_UNROLL // (2 * GEMM_UNROLL)} if loops else {})}


class ConvGemmPairs(ConvGemm):
    """conv2d_gemm under --optimize speed on pixel pairs (templates/cortexm/ops_dsp/conv2d_gemm.c.j2, its mk22
    branch, conv2d_gemm_2x2.j2): per step two k-pairs of 2 pixels x 2 output channels, one LDM of four im2col words
    and one of four int16 weight pairs, then eight SMLAD (10 instructions per 16 MACs; the 3x2 kernel's step is 8
    per 12). One asm statement per block runs all channel pairs; its 14 registers include r7, which it keeps in the
    im2col buffer meanwhile (the frame pointer of -fno-omit-frame-pointer builds).
    All steps straight-line; blocks of 2 pixels leave no idle pixel where the pixel count is even (ResNet-8's
    3k + 1 maps cost the 3x2 kernel a whole block); an odd range's last pixel goes through a 2-pixel tail
    buffer. Requantization (and a fused add) in the assembly (asm_requant) only. Never selected itself: codegen's
    speed pass (ConvGemm.speed_pass, ConvGemmPairs.take) turns conv2d_gemm layers into it."""
    name = "conv2d_gemm_2x2"
    modes = frozenset()
    cost_kinds = {"gemm_2x2": ("im2col_words", "zero_words", "runs", "runs_valid", "tap_iters", "tail_runs",
                               "partial_elems", "mk_pairs", "mk_rem", "mk_blocks", "outputs", "blocks", "const")}
    cost_reduced = {"gemm_2x2": ("im2col_words", "mk_pairs", "outputs")}
    cost_work = {"gemm_2x2": (("mk_pairs", 2 * GEMM_CHANNELS * 2 * 2), ("mk_rem", 2 * GEMM_CHANNELS * 2),
                              ("outputs", 1))}

    @staticmethod
    def applies(sel) -> bool:
        """Whether a conv2d_gemm selection can run on pixel pairs: int16 weights, one block per step, the
        requantization in the assembly."""
        d = sel.ctx
        return sel.kind == ConvGemm.name and not d.get("int8_weights") and d.get("nblocks", 1) == 1 \
            and bool(d.get("asm_rq")) and d.get("pixels") == GEMM_PIXELS \
            and (PAIR_MIN_KWORDS_RES if d["asm_rq"].get("res") else PAIR_MIN_KWORDS) <= d["kwords"] <= PAIR_MAX_KWORDS

    @staticmethod
    def code_bytes(d: dict) -> int:
        """Code bytes of the pixel-pair kernel beyond those of the looped 3x2 one it replaces."""
        return PAIR_BASE_CODE_BYTES + PAIR_STEP_CODE_BYTES * -(-d["kwords"] // 2) \
            - STEP_CODE_BYTES * code_steps(d["kwords"], d["unroll"])

    @classmethod
    def take(cls, selections: list, budget: int) -> int:
        """Turn the conv2d_gemm layers of ``selections`` that it applies to into conv2d_gemm_2x2, the largest
        (most MACs per byte of code) first, within ``budget`` code bytes; the budget left."""
        cands = [(-(s.ctx["npix"] * s.ctx["oc_pad"] * s.ctx["kwords"]) / max(1, cls.code_bytes(s.ctx)), i, s)
                 for i, s in enumerate(selections) if cls.applies(s)]
        for _, _, sel in sorted(cands, key=lambda c: (c[0], c[1])):
            extra = max(0, cls.code_bytes(sel.ctx))
            if extra > budget:
                continue
            budget -= extra
            d = sel.ctx
            sel.kind = cls.name
            # the im2col of both pixels at once where ek_im2col3 would take three (whole words per run)
            # col: the im2col words and 5 words the assembly uses after them (kpad: 3 k-pairs more)
            d.update(pixels=2, col_stride=2, kpad=d["kwords"] + 3, mk22=True, im2col2=d.get("im2col3"), im2col3=False,
                     tail_bytes=0,
                     summary=d["summary"].replace(f"{GEMM_PIXELS}x2 SMLAD micro-kernel",
                                                  "2x2 SMLAD micro-kernel on 2 k-pairs per step (speed)"))
        return budget

    def cost_features(self, info: dict) -> tuple[str, dict]:
        f, kwords = im2col_features(info)
        oc = info["out"][2]
        npix = info["out"][0] * info["out"][1]
        blocks = -(-npix // 2)
        calls = blocks * -(-oc // GEMM_CHANNELS)
        return "gemm_2x2", {**f, "mk_pairs": calls * (kwords // 2), "mk_rem": calls * (kwords % 2),
                            "mk_blocks": calls, "outputs": npix * oc, "blocks": blocks, "const": 1}


VARIANTS = (ConvGemm(), ConvGemmStraight(), ConvGemmPairs())


def residual_table(node, graph, ctx: dict) -> dict:
    """A fused add's rescaled residual operand as a table over the residual's 256 codes (``res_table``, added to
    the rescaled conv output in epilogue.j2's store): one load instead of the one-multiply form's five
    instructions or the reference form, for 1 KiB of flash; {} where the operand is not 8-bit or its form is a
    shift already (scalar_expr's x * 2^(L-1))."""
    res = node.attrs.get("residual")
    if not res or len(node.inputs) < 4:
        return {}
    r = graph.tensors[node.inputs[3]]
    if r.itemsize != 1 or (ctx.get("res_b") and "ek_dsp_rq" not in ctx["res_b"]):
        return {}
    info = np.iinfo(r.dtype)
    codes = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    table = contract.apply_requant(codes - r.zero_point, res["in_requant"][1])
    if np.abs(table).max() >= 2**31:
        return {}
    return {"res_table": [int(v) for v in table], "res_table_offset": -int(info.min)}
