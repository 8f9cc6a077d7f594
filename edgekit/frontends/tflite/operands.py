"""What the operator lowerings share: operand indices, weights, bias, the conv and FC multipliers."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor


def op_inputs(op) -> list[int]:
    return [int(i) for i in op.InputsAsNumpy()]


def read_bias(lw, where: str, ins: list[int], n_out: int) -> np.ndarray:
    if len(ins) < 3 or ins[2] < 0:
        return np.zeros(n_out, np.int64)
    _, b = lw.const(where, ins[2], "bias", ("INT32",))
    if b.size != n_out:
        raise UnsupportedOpError(f"{where}: bias of {b.size} values for {n_out} outputs")
    return b.astype(np.int64).ravel()


def read_weights(lw, where: str, i: int, n_out: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = lw.const(where, i, "weights", ("INT8",))
    if t.scale is None or t.scale.size not in (1, n_out):
        raise UnsupportedOpError(f"{where}: weights '{t.name}' are not quantized per tensor or per output channel")
    if t.scale.size > 1 and t.quantized_dimension != channel_axis % w.ndim:
        raise UnsupportedOpError(f"{where}: weights quantized along axis {t.quantized_dimension}, expected the "
                                 "output channel axis")
    if t.zero_point is not None and np.any(t.zero_point != 0):
        raise UnsupportedOpError(f"{where}: asymmetric weights (zero point != 0) are not supported")
    return w, t.scale


def conv_requant(lw, where, x: Tensor, w_scale: np.ndarray, out: Tensor, lo: int, hi: int, n_out: int):
    """TFLite Micro's multipliers of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
    (PopulateConvolutionQuantizationParams, CalculateOpDataFullyConnected): per output channel
    (a per-tensor weight scale broadcast), ``double(s_in) * double(s_w) / double(s_out)`` from the
    float32 scales, then QuantizeMultiplier; identical channels collapse to one per-tensor entry."""
    ws = np.resize(w_scale.astype(np.float64), n_out)
    ratios = np.float64(np.float32(x.scale[0])) * ws / np.float64(np.float32(out.scale[0]))
    try:
        return contract.tflite_requant(ratios, out.zero_point, lo, hi)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
