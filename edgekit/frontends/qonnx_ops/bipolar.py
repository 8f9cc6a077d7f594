"""BipolarQuant (binary weights and activations: ``x >= 0 ? +scale : -scale``).

Codes are -1/+1 held as int8 (weights packed two bits each in flash), so the existing
int8 kernels compute binary layers exactly under the integer contract.

- Weights: the sign of each float weight, scale per tensor or per channel.
- Activations: the sign of the real value. For an int32 accumulator ``a`` (zero point 0,
  positive scale) that is ``a >= 0``, computed by a requantization with multiplier 2,
  zero point +1 and clamp [-1, 1]: ``2a + 1`` is odd, >= 1 when ``a >= 0`` and <= -1
  otherwise, so the clamp yields exactly +1 / -1. Exact. After BatchNormalization it is one
  integer threshold per channel (``threshold.py``, exact); a float affine map pending on the
  accumulator (decomposed BatchNorm) is folded into the layer first (rounded).
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor
from ..qonnx_lowering import THRESHOLD_CHAIN, FloatConst, FloatInput, QuantConst, describe, lowering
from .batchnorm import fold_affine
from .elementwise import affine_of
from .threshold import emit_thresholds

# Bipolar codes -1/+1 need two bits as signed integers (flash packing, accumulator bounds).
BIPOLAR_STORAGE_BITS = 2


@lowering("BipolarQuant")
def lower_bipolar_quant(lw, node) -> None:
    scale = np.asarray(lw.const(node, 1, "the scale"), np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise UnsupportedOpError(f"{describe(node)}: scale must be positive and finite")
    src = lw.env.get(node.input[0])
    if isinstance(src, FloatConst):  # binary weights
        codes = np.where(np.asarray(src.value, np.float32) >= 0, 1, -1).astype(np.int64)
        lw.env[node.output[0]] = QuantConst(codes, scale, np.zeros_like(scale), BIPOLAR_STORAGE_BITS, True)
        return
    if scale.size != 1:
        raise UnsupportedOpError(f"{describe(node)}: per-channel activation scales are not supported")
    if isinstance(src, FloatInput):  # the input quantizer (FINN's 1W1A networks): the sign, on the host
        # (contract.quantize_bipolar); code 0 never occurs, so the first layer takes any kernel
        out = Tensor(node.output[0], lw.shape(node.output[0]), "int8", BIPOLAR_STORAGE_BITS, True,
                     [float(scale.ravel()[0])], 0, -1, 1)
        lw.quantize_float_input(node, src, out, rounding="bipolar")
        return
    v = lw.value(node)
    t = lw.tensors[v.tensor]
    out = Tensor(node.output[0], t.shape, "int8", BIPOLAR_STORAGE_BITS, True, [float(scale.ravel()[0])], 0, -1, 1)
    if v.pending is not None and v.pending[0] == THRESHOLD_CHAIN:  # after BatchNorm: one exact threshold
        emit_thresholds(lw, node, v, out, lambda y: np.where(y >= 0, 1, -1), np.array([1]), 2)
        return
    if v.pending is not None:
        prod = next((n for n in lw.nodes if t.name in n.outputs), None)
        if v.pending[0] != "affine" or prod is None or prod.op not in ("dense", "conv2d") \
                or prod.attrs.get("requant") is not None:
            raise UnsupportedOpError(f"{describe(node)}: BipolarQuant after an unquantized {v.pending[0]}")
        fold_affine(lw, node, prod, t, *affine_of(v.pending[1]))
    if t.dtype != "int32" or t.zero_point != 0:
        raise UnsupportedOpError(f"{describe(node)}: BipolarQuant of a quantized activation; edgekit binarizes "
                                 "a layer's accumulator (BipolarQuant right after a Conv or Gemm, with BatchNorm)")
    rq = contract.make_requant(np.array([2.0]), 1, -1, 1)
    lw.emit(node, "requantize", [t.name], out, requant=rq)
    if v.tensor in lw.feature_perm:
        lw.feature_perm[out.name] = lw.feature_perm[v.tensor]

