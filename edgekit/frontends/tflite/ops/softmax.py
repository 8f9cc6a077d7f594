"""SOFTMAX -> IR ``softmax_tflite`` with the exp table TFLite computes (gemmlowp exp)."""
from __future__ import annotations

import math

import numpy as np

from ....errors import ContractError, UnsupportedOpError
from ....ir import contract
from ..operands import op_inputs
from ..registry import lowering


def _srdhm(a: int, b: int) -> int:
    return int(contract.srdhm(np.int64(a), np.int64(b)))


def _rdbp(x: int, e: int) -> int:
    return int(contract.rdbp(np.int64(x), e))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbp(x4, 2)
    poly = _rdbp(_srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + _srdhm(constant_term, x + poly)


def exp_on_negative_values(a: int, integer_bits: int = 5) -> int:
    """gemmlowp exp_on_negative_values: Q(integer_bits) input <= 0 -> Q0.31 exp(a)."""
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        int(contract.sat_shl(np.int64(a_mod), integer_bits)))  # Rescale<0>
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent and remainder & (1 << (frac_bits + exponent)):
            result = _srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return contract.INT32_MAX if a == 0 else result


def softmax_exp_table(beta: float, input_scale: float) -> np.ndarray:
    """EXP[d] for d = max - x in 0..255, exactly as TFLite's int8 softmax computes exp(-d)."""
    real = min(float(np.float64(np.float32(beta))) * float(np.float64(np.float32(input_scale))) * (1 << 26),
               (1 << 31) - 1.0)  # PreprocessSoftmaxScaling, 5 integer bits
    if not real > 1.0:
        raise ValueError("beta * input scale is too small for TFLite's softmax (multiplier must exceed 1)")
    m, s = contract.quantize_multiplier_tflite(real)
    left = 31 - s  # TFLite's left shift (>= 0)
    diff_min = -math.floor(1.0 * 31 * (1 << 26) / (1 << left))  # CalculateInputRadius(5, left)
    table = np.zeros(256, np.int64)
    for d in range(256):
        if -d >= diff_min:
            scaled = _srdhm(-d * (1 << left), m)  # MultiplyByQuantizedMultiplierGreaterThanOne
            table[d] = exp_on_negative_values(scaled)
    return table


@lowering("SOFTMAX")
def lower_softmax(lw, op, name: str, where: str) -> None:
    x = lw.act(where, op_inputs(op)[0])
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.zero_point != -128 or np.float32(out.scale[0]) != np.float32(1 / 256):
        raise UnsupportedOpError(f"{where}: int8 softmax output must have scale 1/256 and zero point -128 "
                                 f"(TFLite's requirement), not {out.scale[0]:.6g} and {out.zero_point}")
    depth = x.shape[-1] if x.shape else 1
    if depth * (1 << 19) >= 2**31:
        raise ContractError(f"{where}: softmax over {depth} values overflows TFLite's Q12.19 sum")
    o = lw.options(op, lw.tfl.SoftmaxOptions)
    beta = o.Beta() if o is not None else 1.0
    try:
        table = softmax_exp_table(beta, x.scale[0])
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    tname = lw.add_const(f"{name}_exp", table, "int32", 32, [2.0**-31])
    lw.emit(name, "softmax_tflite", [x.name, tname], out, oidx, beta=float(beta))
