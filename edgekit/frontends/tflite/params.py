"""TFLite's parameter arithmetic: activation ranges from float32 scales, padding."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract

INT8_MIN, INT8_MAX = -128, 127


def activation_range(act: str, scale: float, zero_point: int, where: str) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for int8 outputs (quantize in float32, round half away)."""
    def q(f: float) -> int:
        return zero_point + contract.round_half_away(np.float32(f) / np.float32(scale))

    if act == "NONE":
        return INT8_MIN, INT8_MAX
    if act == "RELU":
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if act == "RELU6":
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(INT8_MIN, q(-1.0)), min(INT8_MAX, q(1.0))
    raise UnsupportedOpError(f"{where}: fused activation {act} is not supported "
                             "(edgekit supports NONE, RELU, RELU6, RELU_N1_TO_1)")


def same_or_valid(padding: str, in_size: int, k: int, stride: int, dilation: int, where: str) -> tuple[int, int, int]:
    """TFLite ComputeOutSize + ComputePaddingWithOffset: (out, pad_before, pad_after)."""
    eff = (k - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size + stride - eff) // stride
    else:
        raise UnsupportedOpError(f"{where}: padding {padding}")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2, total - total // 2
