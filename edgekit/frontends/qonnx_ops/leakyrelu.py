"""LeakyRelu between quantizers (Brevitas ``nn.LeakyReLU`` between QuantIdentity layers) -> IR ``leakyrelu``.

The float op is kept pending on its quantized input and resolved by the following Quant,
which fixes the output grid: the positive branch is a requantization, the negative one
float32's product ``alpha * x`` emulated in integers (see ``edgekit/ops/leakyrelu.py``).
The resolver runs the operator on every input code and compares with qonnx's float32
arithmetic; a model where they differ is reported as not bit-exact.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.operators import get_op
from ..qonnx_lowering import IntValue, describe, lowering, onnx_attrs, resolves

ONNX_DEFAULT_ALPHA = 0.01


def float32_significand(alpha: float) -> tuple[int, int]:
    """(A, E) with float32(|alpha|) == A * 2^-E, A < 2^24 an integer (the significand)."""
    mant, exp = math.frexp(abs(float(np.float32(alpha))))
    return int(mant * 2**24), 24 - exp


@lowering("LeakyRelu")
def lower_leakyrelu(lw, node) -> None:
    v = lw.value(node)
    t = lw.tensors[v.tensor]
    if v.pending is not None or t.dtype == "int32" or len(t.scale) != 1:
        raise UnsupportedOpError(f"{describe(node)}: LeakyRelu needs a quantized per-tensor input of at most 16 "
                                 "bits (put a quantizer, e.g. QuantIdentity, before it)")
    alpha = float(np.float32(onnx_attrs(node).get("alpha", ONNX_DEFAULT_ALPHA)))
    if not math.isfinite(alpha):
        raise UnsupportedOpError(f"{describe(node)}: alpha {alpha} is not a finite number")
    lw.env[node.output[0]] = IntValue(v.tensor, ("leaky relu", node, alpha))


@resolves("leaky relu")
def resolve_leakyrelu(lw, node, v, out) -> None:
    """The Quant after a LeakyRelu: one ``leakyrelu`` node onto the Quant's grid."""
    _, lr_node, alpha = v.pending
    t = lw.tensors[v.tensor]
    significand, exponent = float32_significand(alpha)
    s_in, s_out = np.float64(t.scale[0]), np.float64(out.scale[0])
    pos = contract.requant_for_scales(np.asarray(t.scale), out.scale[0], out.zero_point, out.qmin, out.qmax)
    neg = contract.make_requant(np.array([s_in / s_out * 2.0**-exponent]), out.zero_point, out.qmin, out.qmax)
    # the product |x - zp| * A has at most this many bits beyond float32's 24
    widest = max(abs(t.qmin - t.zero_point), abs(t.qmax - t.zero_point)) * significand
    if neg.multiplier[0] == 0 or neg.shift[0] < max(widest.bit_length() - 24, 0):
        raise UnsupportedOpError(f"{describe(lr_node)}: alpha {alpha} with input scale {s_in:.6g} and output scale "
                                 f"{s_out:.6g} is outside the range edgekit's integer LeakyRelu covers")
    lw.emit(lr_node, "leakyrelu", [t.name], out, requant=pos, neg_requant=neg, alpha=alpha,
            alpha_significand=significand)
    lw.env[node.output[0]] = lw.env[out.name] = IntValue(out.name)

    codes = np.arange(t.qmin, t.qmax + 1)
    got = get_op("leakyrelu", lr_node.name).simulate(lw.nodes[-1], [codes[None]], lw)[0][0]
    real = (codes - t.zero_point).astype(np.float32) * np.float32(t.scale[0])  # qonnx's dequantization
    want = contract.quantize(np.where(real >= 0, real, np.float32(alpha) * real), out.scale[0], out.zero_point,
                             out.qmin, out.qmax)
    differ = int(np.count_nonzero(got != want))
    if differ:
        lw.inexact.append(f"{describe(lr_node)}: LeakyRelu differs from qonnx's float32 arithmetic on {differ} of "
                          f"{codes.size} input codes")
