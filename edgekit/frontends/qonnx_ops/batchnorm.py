"""BatchNormalization after a quantized conv or dense layer, folded into it.

The layer's int32 accumulator ``a`` (scale ``s``) becomes ``a * s * g + h`` with
``g = gamma / sqrt(var + eps)`` and ``h = beta - mean * g``. Folding keeps ``a`` and
moves ``g`` into the output scale (per channel; channels with ``g < 0`` have their
weights and bias negated) and ``h`` into the bias, rounded to the accumulator grid.
That rounding, and the non-power-of-two scales, make the result close to qonnx but not
bit-exact with it; simulator, C and firmware still agree exactly. For exact models fold
BatchNorm into the weights before quantization (QAT) instead.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ..qonnx_lowering import THRESHOLD_CHAIN, IntValue, describe, lowering, onnx_attrs, sign_flipped_layer
from .threshold import threshold_candidate


@lowering("BatchNormalization")
def lower_batchnorm(lw, node) -> None:
    v = lw.env.get(node.input[0])
    t = lw.int_input(node, 0)
    prod = next((n for n in lw.nodes if t.name in n.outputs), None)
    users = [n for n in lw.model.graph.node if node.input[0] in n.input]
    if prod is None or prod.op not in ("dense", "conv2d") or prod.attrs.get("requant") is not None \
            or len(users) != 1:
        raise UnsupportedOpError(f"{describe(node)}: BatchNorm must directly follow a quantized Conv or Gemm "
                                 "(whose only consumer it is)")
    if v.pending is None and threshold_candidate(lw, node, lambda name: [n for n in lw.model.graph.node
                                                                          if name in n.input]):
        lw.env[node.output[0]] = IntValue(t.name, (THRESHOLD_CHAIN, (node,)))  # the Quant finds thresholds
        return
    eps = float(onnx_attrs(node).get("epsilon", 1e-5))
    gamma, beta, mean, var = (np.asarray(lw.const(node, i, "BatchNorm parameters"), np.float64) for i in range(1, 5))
    g = gamma / np.sqrt(var + eps)
    fold_affine(lw, node, prod, t, g, beta - mean * g)
    lw.env[node.output[0]] = IntValue(t.name, v.pending)


def fold_affine(lw, node, prod, t, g, h) -> None:
    """Fold ``acc * s * g + h`` (per channel) into the producing dense/conv ``prod`` of ``t``:
    ``g`` into the output scale, ``h`` into the bias rounded to the accumulator grid."""
    s = np.asarray(t.scale, np.float64)
    sign = np.where(g < 0, -1, 1)
    w, b, rows = sign_flipped_layer(lw, prod, sign)
    new_scale = s * np.abs(g)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(new_scale > 0, np.round(h / np.where(new_scale > 0, new_scale, 1)), 0)
    b = b + shift.astype(np.int64)
    x = lw.tensors[prod.inputs[0]]
    contract.check_accumulator(describe(node), contract.accumulator_bound(rows, b, x.qmin - x.zero_point,
                                                                          x.qmax - x.zero_point))
    if np.any(new_scale <= 0):
        raise UnsupportedOpError(f"{describe(node)}: BatchNorm with gamma = 0 in some channel")
    lw.constants[prod.inputs[1]] = w.astype(np.int8)
    lw.constants[prod.inputs[2]] = b.astype(np.int32)
    t.scale = [float(v) for v in new_scale]
    lw.inexact.append(f"{describe(node)} folded with rounding")
