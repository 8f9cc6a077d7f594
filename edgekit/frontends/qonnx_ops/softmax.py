"""Softmax over channels, between quantizers -> IR ``softmax`` (integer, see the contract).

``e_i = EXP[max - q_i]`` from a build-time table of ``round(2^16 * exp(-d * s_in))``,
then ``out_i = div_round(e_i * 2^k, sum_j e_j) + zp`` for an output scale ``2^-k``.
Close to qonnx's float softmax (at most 1-2 LSB), not bit-exact with it.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedOpError
from ..qonnx_lowering import IntValue, describe, lowering, onnx_attrs, resolves

EXP_BITS = 16


@lowering("Softmax")
def lower_softmax(lw, node) -> None:
    v = lw.value(node)
    t = lw.tensors[v.tensor]
    rank = len(lw.onnx_shape(node.input[0])) + 1
    axis = int(onnx_attrs(node).get("axis", -1))
    if (axis + rank if axis < 0 else axis) != rank - 1 or len(t.shape) != 1:
        raise UnsupportedOpError(f"{describe(node)}: softmax over axis {axis} of a {rank}-D tensor; edgekit "
                                 "supports softmax over the features of a flat vector")
    if v.pending is not None or t.bits > 8 or t.dtype == "int32":
        raise UnsupportedOpError(f"{describe(node)}: Softmax needs a quantized input of at most 8 bits; put a "
                                 "quantizer (e.g. QuantIdentity) between the last layer and the softmax")
    lw.env[node.output[0]] = IntValue(v.tensor, ("softmax", node))


@resolves("softmax")
def resolve_softmax(lw, node, v, out) -> None:
    sm = v.pending[1]
    t = lw.tensors[v.tensor]
    k = -math.log2(out.scale[0])
    if k != int(k) or not 0 <= k <= 14:
        raise UnsupportedOpError(f"{describe(node)}: softmax output scale {out.scale[0]} must be 2^-k with "
                                 "0 <= k <= 14 (e.g. 1/256)")
    diffs = np.arange(t.qmax - t.qmin + 1)
    table = np.round(np.exp(-diffs * np.float64(t.scale[0])) * 2**EXP_BITS).astype(np.int64)
    if t.size * 2**EXP_BITS >= 2**31:
        raise UnsupportedOpError(f"{describe(node)}: softmax over {t.size} values overflows the int32 sum")
    name = lw.add_const(f"{sm.name}_exp", table, "int32", 32, True, [1.0])
    lw.emit(sm, "softmax", [t.name, name], out, out_shift=int(k), zero_point=out.zero_point, lo=out.qmin,
            hi=out.qmax)
    lw.env[node.output[0]] = IntValue(out.name)
    lw.inexact.append(f"{describe(sm)}: integer softmax")

