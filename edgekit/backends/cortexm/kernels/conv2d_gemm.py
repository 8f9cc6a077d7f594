"""DSP GEMM for convolutions (not depthwise): im2col of int16 pairs and a 3 pixel x 2 output
channel SMLAD micro-kernel (templates/cortexm/ops_dsp/conv2d_gemm.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from ....ir import contract
from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import (COMPACT_RECORD_MIN_KWORDS, accumulator_bounds, compact_records, extend_insn, offset_word,
                     pair_words, requant_ctx, residual_ctx, run_pairs, smmlar_ctx, valid_taps, wider_residual_in_place)

#: im2col block: pixels per block (the 3x2 micro-kernel: 3 pixels x 2 output channels).
GEMM_PIXELS = 3
#: output channels per micro-kernel step
GEMM_CHANNELS = 2
#: k-pair steps per iteration of the micro-kernels' loops.
GEMM_UNROLL = 4


#: int16 weights (--optimize speed): K of at most this many k-pairs runs as straight-line steps, without a loop
FULL_UNROLL_KWORDS = 33


def unroll(kwords: int, full: bool = False) -> int:
    """k-pair steps per iteration of the micro-kernel's loop: twice as many for long K; with ``full`` (the int16
    variant) all the steps after the first where K is at most FULL_UNROLL_KWORDS (one iteration: no loop)."""
    if full and 2 < kwords <= FULL_UNROLL_KWORDS:
        return kwords - 1
    return 2 * GEMM_UNROLL if kwords > 6 * GEMM_UNROLL else GEMM_UNROLL


def asm_requant(d: dict, node, graph, records_in_stream: bool = True) -> dict | None:
    """The requantization the GEMM's assembly does itself after the accumulation (templates/cortexm/ops_dsp/
    conv2d_gemm.c.j2 rq_asm): SMMLAR records (M, 2 Ahi, e) (per channel in the weight stream unless
    ``records_in_stream`` is False: the caller puts them there), int8 outputs, an even channel count, no fused
    residual add. The saturation and the clamp bounds inside the int8 range (None: none); None where the C
    epilogue (epilogue.j2) is needed."""
    if not (d.get("fast") and d.get("smmlar")) or (records_in_stream and not d.get("fast_pc")) \
            or node.attrs.get("residual"):
        return None
    # int8 outputs: what TFLite's double rounding comes with (uint8 outputs come from QONNX's single rounding)
    if graph.tensors[node.outputs[0]].dtype != "int8" or d["g"]["oc"] % 2:
        return None
    rq = node.attrs["requant"]
    if not -128 <= rq.lo <= rq.hi <= 127:
        return None
    return {"sat": "ssat", "lo": rq.lo if rq.lo > -128 else None, "hi": rq.hi if rq.hi < 127 else None}


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

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (oc, kh, kw, ic)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        oc, kh, kw, ic = w.shape
        runs, run_len = runs_of(kh, kw, ic, g["dw"])
        rp = run_pairs(run_len)
        words_per_run = len(rp)
        kwords = len(runs) * words_per_run                           # k-pairs per output pixel
        flat = w.reshape(oc, -1)                                       # (ky, kx, ic) order
        oc_pad = oc + (oc & 1)
        wp = np.zeros((oc_pad, kwords, 2), np.int64)
        for r, (ky, kx0) in enumerate(runs):
            for j, (a, b) in enumerate(rp):
                for half, e in enumerate((a, b)):
                    if e < 0:
                        continue
                    if g["dw"] == 1:
                        kx, c = divmod(e, ic)
                    else:
                        kx, c = kx0, e
                    wp[:oc, r * words_per_run + j, half] = flat[:, (ky * kw + kx) * ic + c]
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
        ctx.update(residual_ctx(node, graph))
        ctx.update(residual_table(node, graph, ctx))
        if node.attrs.get("residual"):
            ctx["summary"] += ", fused residual add"
        return Selection(self.name, self.template, ctx=ctx,
                         weight_bytes=4 * (stream.size + len(ctx.get("res_table", ()))))

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
        rows = np.array(d["w_words"], np.int64).reshape(npairs, -1)[:, :-6]   # biases and weights of each pair
        s2 = np.array(c["s"], np.int64).reshape(-1, 2)
        stream = np.concatenate([rows, np.array(c["m"], np.int64).reshape(-1, 2), s2[:, :1] | (s2[:, 1:] << 16)],
                                axis=1).reshape(-1)
        # the in-assembly requantization (asm_rq) reads the full records: compact ones take the C epilogue
        d.update(w_words=stream.tolist(), rq_table=c["h"], asm_rq=None,
                 summary=d["summary"] + ", compact requantization records")
        sel.weight_bytes = 4 * (stream.size + len(c["h"]))
        return True

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


VARIANTS = (ConvGemm(),)


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
