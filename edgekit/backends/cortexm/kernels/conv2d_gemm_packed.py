"""DSP GEMM for convolutions with 4- or 2-bit weights packed in flash: conv2d_gemm's im2col of int16 pairs
and 3 pixel x 2 output channel SMLAD micro-kernel, but each weight word holds 2 (4-bit) or 4 (2-bit)
k-pair steps of both channels, unpacked by LSL, AND and SXTB16 / SXTB16 ROR #8 (kernels/packing_dsp.py;
templates/cortexm/ops_dsp/conv2d_gemm_packed.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import (accumulator_bounds, extend_insn, offset_word, requant_ctx, residual_ctx, run_pairs, smmlar_ctx,
                     wider_residual_in_place)
from .conv2d_gemm import im2col3_pays, im2col3_share, im2col_features, runs_of
from .packing_dsp import (BITS, mask, packed_reference_bytes, range_refusal, scale_log2, scaled_bound_refusal,
                          set_words, sets_per_word, weight_bits)

#: pixels per im2col block (the 3 x 2 micro-kernel)
PIXELS = 3
#: k-pair steps per iteration of the micro-kernel's loop (whole words: 2 of 4-bit, 1 of 2-bit weights)
STEPS_PER_LOOP = 4


class ConvGemmPacked(KernelVariant):
    name = "conv2d_gemm_packed"
    ops = ("conv2d",)
    features = frozenset({"dsp"})
    # above every int8-weight variant (GEMM, few-channel, 1x1 + add): a layer whose weights are 4 or 2 bits
    # keeps them packed in flash under size and balanced
    priority = 15
    template = "ops_dsp/conv2d_gemm_packed.c.j2"
    row_ranges = True
    # under --optimize speed the int16-weight GEMM takes the layer (or, short of flash, this one again)
    modes = frozenset({"size", "balanced"})
    # a layer with 4- or 2-bit weights that this variant refuses loses its packing: listed as a fallback
    refusals_are_fallbacks = True
    cost_kinds = {"gemm_packed": ("im2col_words", "zero_words", "runs", "runs_valid", "tap_iters", "tail_runs",
                                  "partial_elems", "mk_words", "mk_blocks", "outputs", "plain_outputs", "blocks",
                                  "const")}
    cost_reduced = {"gemm_packed": ("im2col_words", "mk_words", "outputs")}
    # MACs per weight word: pixels x channels x 2 per k-pair x k-pairs per word (2-bit: 4)
    cost_work = {"gemm_packed": (("mk_words", PIXELS * 2 * 2 * 4), ("outputs", 1))}

    def claims(self, node) -> bool:
        return not node.attrs["depthwise"]

    def applies(self, node, graph) -> bool:
        return len(node.inputs) > 2 and weight_bits(node, graph) in BITS

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        bits = weight_bits(node, graph)
        w = graph.constants[node.inputs[1]]
        why = range_refusal(w, bits)
        if why:
            return why
        bias = graph.constants[node.inputs[2]]
        bound = accumulator_bounds(bias, w.reshape(w.shape[0], -1), x.dtype, x.zero_point).max(initial=0)
        return scaled_bound_refusal(bound, bits) or wider_residual_in_place(node, graph, plan)

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        bits = weight_bits(node, graph)
        steps = sets_per_word(bits)
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (oc, kh, kw, ic)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        oc, kh, kw, ic = w.shape
        runs, run_len = runs_of(kh, kw, ic, g["dw"])
        rp = run_pairs(run_len)
        words_per_run = len(rp)
        kwords = len(runs) * words_per_run                           # k-pairs per output pixel
        nwords = -(-kwords // steps)                                  # weight words per channel pair
        kpad = nwords * steps                                         # k-pair steps, zero weights past kwords
        flat = w.reshape(oc, -1)
        oc_pad = oc + (oc & 1)
        wp = np.zeros((oc_pad, kpad, 2), np.int64)                    # per channel, k-pair, half
        for r, (ky, kx0) in enumerate(runs):
            for j, (a, b) in enumerate(rp):
                for half, e in enumerate((a, b)):
                    if e < 0:
                        continue
                    kx, c = divmod(e, ic) if g["dw"] == 1 else (kx0, e)
                    wp[:oc, r * words_per_run + j, half] = flat[:, (ky * kw + kx) * ic + c]
        # set s of word m is k-pair step m * steps + s; its bytes (c: w[a], c+1: w[a], c: w[b], c+1: w[b]):
        # SXTB16 gives channel c's int16 pair, SXTB16 ROR #8 channel c + 1's (as int8_weights' words)
        c0, c1 = wp[0::2], wp[1::2]                                   # (oc_pad // 2, kpad, 2)
        sets = np.stack([c0[..., 0], c1[..., 0], c0[..., 1], c1[..., 1]], axis=-1)   # (pairs, kpad, 4)
        words = set_words(sets.reshape(oc_pad // 2, nwords, steps, 4), bits)        # (pairs, nwords)
        rq = node.attrs.get("requant")
        rqc = smmlar_ctx(requant_ctx(rq, oc_pad), rq, accumulator_bounds(bias, flat, x.dtype, x.zero_point), oc_pad)
        scale = scale_log2(bits)
        # the accumulators hold 2^scale x the sum: start them from the scaled biases, shift back before the
        # epilogue (by one less into the SMMLAR epilogue's doubled accumulator, ek_dsp_rq2d)
        b2 = np.array(bias.tolist() + [0] * (oc_pad - oc), np.int64).reshape(-1, 2) * 2**scale
        parts = [b2, words]
        if rqc.get("fast") and rqc.get("fast_pc"):
            parts.append(np.array(rqc["frec"], np.int64).reshape(-1, 6))
        stream = np.concatenate(parts, axis=1).reshape(-1)
        doubled = bool(rqc.get("smmlar"))
        per_loop = max(1, STEPS_PER_LOOP // steps) * (2 if kwords > 6 * STEPS_PER_LOOP else 1)
        ctx = {
            "g": g, "runs": runs, "run_len": run_len, "words_per_run": words_per_run, "kwords": kwords,
            "kpad": kpad, "nwords": nwords, "steps": steps, "bits": bits, "mask_hex": f"0x{mask(bits):08X}",
            "oc_pad": oc_pad, "npix": g["oh"] * g["ow"], "ext": extend_insn(x.dtype),
            "offset_word": offset_word(x.zero_point), "tap_mode": ic % 4 == 0, "per_loop": per_loop,
            # conv2d_gemm's im2col of 3 pixels at once where it pays (ek_im2col3, conv2d_gemm.im2col3_pays)
            "im2col3": g["dw"] == 1 and run_len % 4 == 0 and PIXELS == 3
            and max(g["oh"] * g["ow"], g["ih"] * g["iw"], g["ic"]) < 2**15 and im2col3_pays(kh, kw, ic, im2col3_share(g["oh"], g["ow"], g["iw"], kw, g["sw"],
                                                           g["pad_l"])),
            "pixels": PIXELS, "acc_doubled": doubled, "acc_shift": scale - 1 if doubled else scale,
            "w_words": stream.tolist(), "uses_bias": False,
            "scratch_bytes": 4 * PIXELS * kpad,
            "tail_bytes": PIXELS * oc * graph.tensors[node.outputs[0]].itemsize if (g["oh"] * g["ow"]) % PIXELS else 0,
            "summary": f"im2col {kwords} int16 pairs/pixel, {bits}-bit weights packed {steps * 4} per word "
                       f"(LSL/AND/SXTB16), {PIXELS}x2 SMLAD micro-kernel",
        }
        ctx.update(rqc)
        ctx.update(residual_ctx(node, graph))
        if node.attrs.get("residual"):
            ctx["summary"] += ", fused residual add"
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * stream.size)

    def flash_bytes(self, sel, node, graph) -> int:
        # the packed words replace the reference kernel's packed weights and its bias (compiled out): the
        # padding and the requantization constants are extra
        return max(0, sel.weight_bytes - packed_reference_bytes(node, graph) - graph.constants[node.inputs[2]].nbytes)

    def instructions_saved_by_int16(self, sel) -> int:
        # per k-pair step of a pixel block and channel pair, against one LDRD of int16 pairs: 4-bit 9 per word of
        # 2 steps (2 LDR, LSL, 2 AND, 4 SXTB16), 2-bit 19 per word of 4 steps (4 LDR, 3 LSL, 4 AND, 8 SXTB16);
        # and the shift of each accumulator
        d = sel.ctx
        blocks = -(-d["npix"] // d["pixels"])
        per_word = {4: 9 - 2, 2: 19 - 4}[d["bits"]]
        return blocks * (d["oc_pad"] // 2) * (d["nwords"] * per_word + 2 * d["pixels"])

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts of the im2col copies (conv2d_gemm's) and of the micro-kernel (per weight word)."""
        f, kwords = im2col_features(info)
        oc = info["out"][2]
        npix = info["out"][0] * info["out"][1]
        nwords = -(-kwords // sets_per_word(info.get("wbits", 4)))
        blocks = -(-npix // PIXELS)
        ocp = -(-oc // 2)
        return next(iter(self.cost_kinds)), {
            **f, "mk_words": blocks * ocp * nwords, "mk_blocks": blocks * ocp, "outputs": npix * oc,
            "plain_outputs": npix * oc if info.get("rq") in (None, "none") else 0, "blocks": blocks, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        ic = info["in"][2]
        return [f"w{info.get('wbits', 4)}", "ic4" if ic % 4 == 0 else f"ic{ic % 4}", f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (ConvGemmPacked(),)
