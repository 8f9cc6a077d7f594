"""DSP GEMM for convolutions with int8 weights in flash: conv2d_gemm's im2col and 3 pixel x 2
output channel SMLAD micro-kernel, but each weight word holds the int8 bytes of one k-pair of
both channels, widened in registers by SXTB16 and SXTB16 ROR #8 (templates/cortexm/ops_dsp/
conv2d_gemm.c.j2 with ``int8_weights``, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from .common import Int8WeightsRefusal, byte_words
from .conv2d_gemm import ConvGemm


class ConvGemmInt8(Int8WeightsRefusal, ConvGemm):
    name = "conv2d_gemm_int8"
    # below conv2d_gemm: under --optimize speed the int16 layout goes first, where the flash allows
    priority = 9
    modes = frozenset({"size", "balanced", "speed"})
    int8_weights = True
    weight_form = "int8 weights (SXTB16)"
    cost_kinds = {"gemm_int8": ConvGemm.cost_kinds["gemm"]}
    cost_reduced = {"gemm_int8": ConvGemm.cost_reduced["gemm"]}
    cost_work = {"gemm_int8": ConvGemm.cost_work["gemm"]}

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


VARIANTS = (ConvGemmInt8(),)
