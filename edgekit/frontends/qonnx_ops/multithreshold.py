"""FINN's MultiThreshold on a quantized value -> IR ``threshold``.

qonnx computes ``out_scale * #{j : v >= T[c, j]} + out_bias`` on the float value
``v = s * (x - z)`` of the integer ``x``. Each float threshold becomes the least integer ``x``
whose float value reaches it, so the count is the same for every ``x``: exact. The output is
a quantized tensor with scale ``out_scale`` and codes ``count + out_bias / out_scale``, which
must be integers.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor
from ..qonnx_lowering import describe, lowering, onnx_attrs


def integer_thresholds(thresholds: np.ndarray, scale: np.ndarray, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """Per channel and threshold, the least code ``x`` in [lo, hi + 1] with ``scale * (x - zp) >= T``
    (hi + 1: never reached); ``scale`` is one value per channel, the products in float64 as the
    float32 values they stand for are exact there."""
    s = scale[:, None]
    guess = np.ceil(np.asarray(thresholds, np.float64) / s) + zero_point
    guess = np.clip(np.nan_to_num(guess, nan=hi + 1, posinf=hi + 1, neginf=lo), lo - 1, hi + 1)
    for _ in range(2):  # the quotient's rounding is off by at most one code either way
        guess = np.where((guess - 1 >= lo) & (s * (guess - 1 - zero_point) >= thresholds), guess - 1, guess)
        guess = np.where((guess <= hi) & (s * (guess - zero_point) < thresholds), guess + 1, guess)
    return np.clip(guess, lo, hi + 1).astype(np.int64)


@lowering("MultiThreshold")
def lower_multithreshold(lw, node) -> None:
    v = lw.value(node)
    t = lw.int_input(node, 0)
    thresholds = np.asarray(lw.const(node, 1, "the thresholds"), np.float32).astype(np.float64)
    a = onnx_attrs(node)
    out_scale, out_bias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
    channels = t.shape[-1] if t.shape else 1
    if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
        raise UnsupportedOpError(f"{describe(node)}: thresholds of shape {list(thresholds.shape)}; expected "
                                 f"[{channels} or 1, steps]")
    if np.any(np.isnan(thresholds)) or not out_scale > 0 or not np.isfinite(out_bias):
        raise UnsupportedOpError(f"{describe(node)}: NaN thresholds, a non-positive out_scale or a non-finite out_bias")
    out_min = out_bias / out_scale
    if out_min != round(out_min):
        raise UnsupportedOpError(f"{describe(node)}: out_bias / out_scale = {out_min:g} is not an integer, so the "
                                 "output is not on an integer grid")
    if v.pending is not None:
        raise UnsupportedOpError(f"{describe(node)}: its input comes from an unquantized {v.pending[0]}")
    thresholds = np.broadcast_to(thresholds, (channels, thresholds.shape[1]))
    scale = np.resize(np.asarray(t.scale, np.float64), channels)
    codes = integer_thresholds(thresholds, scale, t.zero_point, t.qmin, t.qmax)
    out_min = int(out_min)
    out_max = out_min + thresholds.shape[1]
    signed = out_min < 0
    bits = max(abs(out_min), abs(out_max)).bit_length() + int(signed)
    dtype = contract.storage_dtype(bits, signed, describe(node))
    out = Tensor(node.output[0], t.shape, dtype, bits, signed, [out_scale], 0, out_min, out_max)
    name = lw.add_const(f"{node.name}_thresholds", codes, "int32", 32, True, [1.0])
    lw.emit(node, "threshold", [t.name, name], out, out_min=out_min, step=1, function="MultiThreshold")
    if v.tensor in lw.feature_perm:
        lw.feature_perm[out.name] = lw.feature_perm[v.tensor]
