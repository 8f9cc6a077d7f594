"""DSP GEMM for convolutions with int8 weights in flash: conv2d_gemm's im2col and 3 pixel x 2
output channel SMLAD micro-kernel, but each weight word holds the int8 bytes of one k-pair of
both channels, widened in registers by SXTB16 and SXTB16 ROR #8 (templates/cortexm/ops_dsp/
conv2d_gemm.c.j2 with ``int8_weights``, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from .common import Int8WeightsRefusal, byte_words
from .conv2d_gemm import GEMM_PIXELS, ConvGemm, asm_requant, im2col_features, unroll

#: blocks of GEMM_PIXELS pixels that share one widening of a channel pair's int8 weights: the first block's
#: pass stores the widened weights beside its pixels, the others load them with one LDRD (11 + 8 + 8
#: instructions per k-pair for three blocks instead of 3 x 10)
SHARED_BLOCKS = (3, 2)
#: words per k-pair in each block's im2col array when blocks share the weights: 3 pixels, 2 weight words
SHARED_COL_STRIDE = 5
#: k-pair steps per loop iteration of the shared-weight passes (the one of less work, padding included)
SHARED_UNROLLS = (8, 4)
#: the shared form is taken where its estimate is below this share of conv2d_gemm_int8's (shared_blocks)
SHARED_GAIN = 0.98
#: im2col bytes the shared layout may take (in a free arena gap, else on the stack: RAM it may add)
SHARED_COL_BYTES = 2048


class GemmInt8Layout(Int8WeightsRefusal):
    """Mixed in before a variant built on conv2d_gemm's weight stream (the GEMM, the few-channel first
    convolutions, the 1x1 shortcuts with a fused add) to keep its weights at int8 in flash: the stream's
    words of both channels' int8 bytes (channel_pair_words), what int16 weights would save, and the flash
    it adds over the layer's own int8 weights. One layout for the three, so they stay alike."""

    modes = frozenset({"size", "balanced", "speed"})
    int8_weights = True
    weight_form = "int8 weights (SXTB16)"

    def channel_pair_words(self, wp: np.ndarray) -> np.ndarray:
        """Per k-pair j one word of bytes (c: w[a], c+1: w[a], c: w[b], c+1: w[b]), (a, b) the
        im2col pair j: SXTB16 gives channel c's int16 pair, SXTB16 ROR #8 channel c + 1's."""
        oc_pad, kwords, _ = wp.shape
        c0, c1 = wp[0::2], wp[1::2]                                   # (oc_pad // 2, kwords, 2)
        return byte_words(c0[..., 0], c1[..., 0], c0[..., 1], c1[..., 1])

    def instructions_saved_by_int16(self, sel) -> int:
        # per k-pair step of a pixel block and channel pair: LDR + 2 SXTB16 against one LDRD
        d = sel.ctx
        return 2 * -(-d["npix"] // d["pixels"]) * (d["oc_pad"] // 2) * d["kwords"]

    def flash_bytes(self, sel, node, graph) -> int:
        # the int8 words replace the layer's weights and bias in flash (the reference copy is
        # compiled out): only the padding and the requantization constants are extra
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes
                   - graph.constants[node.inputs[2]].nbytes)


class ConvGemmInt8(GemmInt8Layout, ConvGemm):
    name = "conv2d_gemm_int8"
    # below conv2d_gemm: under --optimize speed the int16 layout goes first, where the flash allows
    priority = 9
    cost_kinds = {"gemm_int8": ConvGemm.cost_kinds["gemm"]}
    cost_reduced = {"gemm_int8": ConvGemm.cost_reduced["gemm"]}
    cost_work = {"gemm_int8": ConvGemm.cost_work["gemm"]}



def shared_blocks(kwords: int, npix: int) -> int:
    """How many blocks of pixels share each widening of the weights: the most of SHARED_BLOCKS whose im2col
    arrays take at most SHARED_COL_BYTES and whose passes are estimated to execute fewer instructions than
    conv2d_gemm_int8's (1: none). A function of the shape alone, as the latency model needs."""
    for nb in SHARED_BLOCKS:
        if npix > GEMM_PIXELS * (nb - 1) and 4 * SHARED_COL_STRIDE * shared_steps(kwords)[1] * nb <= SHARED_COL_BYTES \
                and shared_estimate(kwords, nb) < SHARED_GAIN * plain_estimate(kwords, nb):
            return nb
    return 1


def plain_estimate(kwords: int, nb: int) -> int:
    """conv2d_gemm_int8's instructions for nb blocks of one channel pair: 10 per k-pair step, 3 per loop iteration,
    about 50 for the C epilogue of six outputs and the loop around it."""
    return nb * (10 * kwords + 3 * -(-(kwords - 1) // unroll(kwords)) + 50)


def shared_estimate(kwords: int, nb: int) -> int:
    """The shared passes' instructions for the same: 11 per padded step of block 0, 8 of the others, 3 per loop
    iteration, about 60 per pass for its setup and its requantization in assembly."""
    u, kpad = shared_steps(kwords)
    return (11 + 8 * (nb - 1)) * kpad + nb * (3 * (kpad // u) + 60)


def shared_steps(kwords: int) -> tuple[int, int]:
    """(steps per loop iteration, k-pairs padded to whole iterations) of the shared-weight passes: the
    fewest instructions (about 9 per k-pair step and 3 per iteration)."""
    return min(((u, -(-kwords // u) * u) for u in SHARED_UNROLLS), key=lambda t: (9 * t[1] + 3 * (t[1] // t[0]), t[0]))


class ConvGemmInt8Shared(ConvGemmInt8):
    """conv2d_gemm_int8 with blocks of pixels sharing each widening of a channel pair's weights: block 0's pass
    (LDM, LDR, two SXTB16, STRD, six SMLAD per k-pair) stores the widened pair beside its pixels in col, the
    passes of the step's other blocks load it with their pixels (LDM, LDRD, six SMLAD); each pass requantizes
    and stores its six outputs in its own assembly. K is padded with zero weights to whole loop iterations."""
    name = "conv2d_gemm_int8_shared"
    # before conv2d_gemm_int8 (which takes what this one refuses), after the int16 conv2d_gemm under speed
    priority = 9.5
    cost_kinds = {"gemm_int8_shared": ("im2col_words", "zero_words", "runs", "runs_valid", "tap_iters", "tail_runs",
                                       "partial_elems", "steps", "w_steps", "iters", "passes", "outputs", "blocks",
                                       "const")}
    cost_reduced = {"gemm_int8_shared": ("im2col_words", "steps", "passes")}
    # MACs per step: 3 pixels x 2 channels x a k-pair
    cost_work = {"gemm_int8_shared": (("steps", 12), ("outputs", 1))}

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        d = ConvGemmInt8.select(self, node, graph, plan).ctx
        if not asm_requant(d, node, graph, records_in_stream=False):
            return ("a requantization its assembly does not do (it does the SMMLAR form, int8 outputs, an even "
                    "channel count, no fused add)")
        if shared_blocks(d["kwords"], d["npix"]) < 2:
            return (f"K of {d['kwords']} k-pairs: no gain estimated, or two blocks' im2col over {SHARED_COL_BYTES} B "
                    "(shared_blocks)")
        return None

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        d = sel.ctx
        kw = d["kwords"]
        nb = shared_blocks(kw, d["npix"])
        unroll_, kpad = shared_steps(kw)
        pairs = d["oc_pad"] // 2
        stream = np.array(d["w_words"], np.int64).reshape(pairs, -1)
        # the records of both channels after each pair's weights, per-tensor ones too (the assembly reads them there)
        rec = stream[:, 2 + kw:] if d["fast_pc"] else np.tile(np.array(d["frec"][:3] * 2, np.int64), (pairs, 1))
        stream = np.concatenate([stream[:, :2 + kw], np.zeros((pairs, kpad - kw), np.int64), rec], axis=1).reshape(-1)
        d.update(nblocks=nb, asm_rq=asm_requant(d, node, graph, records_in_stream=False), col_stride=SHARED_COL_STRIDE, kpad=kpad,
                 unroll=unroll_, w_words=stream.tolist(), scratch_bytes=4 * SHARED_COL_STRIDE * kpad * nb,
                 summary=d["summary"] + f", weights widened once per {nb} blocks")
        sel.weight_bytes = 4 * stream.size
        return sel

    def compact_records(self, sel) -> bool:
        """Never: the passes' assembly reads each channel pair's full records after its weights
        (rq_asm), so conv2d_gemm's compact layout would not be read (size and the flash goal keep
        this variant's 6-word records)."""
        return False

    def instructions_saved_by_int16(self, sel) -> int:
        # per k-pair of a group of nb blocks and channel pair: the first block's LDR, two SXTB16 and STRD, against
        # the int16 kernel's LDRD (the other blocks' LDRD is the int16 kernel's)
        d = sel.ctx
        groups = -(-(-(-d["npix"] // d["pixels"])) // d["nblocks"])
        return 3 * groups * (d["oc_pad"] // 2) * d["kwords"]

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """conv2d_gemm's im2col counts, and the shared passes' steps (all blocks), block 0's extra steps, loop
        iterations and passes (each with its requantization of six outputs)."""
        out, kwords = im2col_features(info)
        oh, ow, oc = info["out"]
        unroll_, kpad = shared_steps(kwords)
        blocks = -(-(oh * ow) // GEMM_PIXELS)
        groups = -(-blocks // max(2, shared_blocks(kwords, oh * ow)))
        passes = blocks * -(-oc // 2)
        out.update(outputs=oh * ow * oc, blocks=blocks, const=1, steps=passes * kpad, w_steps=groups * -(-oc // 2) * kpad, iters=passes * (kpad // unroll_),
                   passes=passes)
        return "gemm_int8_shared", out


VARIANTS = (ConvGemmInt8(), ConvGemmInt8Shared())
