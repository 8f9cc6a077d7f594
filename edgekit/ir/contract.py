"""The integer contract: the one definition of edgekit's integer arithmetic.

Everything here is mirrored, operation for operation, by ``templates/cortexm/ek_contract.h``
and described in ``docs/integer-contract.md``. The simulator calls these functions;
the C backend emits the constants they compute. Change one, change all three.

Summary
-------
* A quantized tensor holds integer codes ``q``; its real value is ``scale * (q - zero_point)``.
* Quantizing a real ``x`` (QONNX ``Quant``, rounding_mode ROUND) is
  ``clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``.
* Products are accumulated in int32. A static check proves that no partial sum can
  leave int32 for the given weights and input range.
* Changing scale (``requantize``) maps an accumulator ``acc`` with scale ``s_acc`` to
  ``clamp(rshift_rne(acc * M, S) + zero_point, lo, hi)`` where ``M * 2**-S``
  approximates ``s_acc / s_out``. For power-of-two ratios it is exact: ``M = 1``
  (a pure rounding right shift) or ``M = 2**k, S = 0`` (a left shift). Otherwise
  ``M`` is a Q31 mantissa in [2**30, 2**31) and the product is taken in 64 bits, with a
  single rounding, half to even.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ContractError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# float32 holds every integer below 2**24 exactly: qonnx (float32 execution) equals
# integer arithmetic only while accumulators stay below this bound.
FLOAT32_EXACT_INT = 2**24
# Largest right shift that the 64-bit path performs; beyond it the result is 0.
MAX_SHIFT = 62

STORAGE_TYPES = {
    # (signed, max bits) -> C / numpy storage type
    (True, 8): "int8",
    (False, 8): "uint8",
    (True, 16): "int16",
    (False, 16): "uint16",
    (True, 32): "int32",
}


def storage_dtype(bits: int, signed: bool, what: str) -> str:
    """Smallest storage type that holds a ``bits``-wide integer, or a ContractError."""
    for (s, width), name in STORAGE_TYPES.items():
        if s == signed and bits <= width:
            return name
    raise ContractError(
        f"{what}: {bits}-bit {'signed' if signed else 'unsigned'} integers cannot be held "
        "(edgekit stores activations in at most 16 bits and biases in int32); "
        "use a narrower quantizer"
    )


def quant_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Integer code range of a QONNX Quant node (``narrow`` drops the most negative code)."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def round_half_even(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties to even: equals QONNX ROUND (numpy.round)."""
    return np.round(x)


def quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Real values to integer codes, step for step as QONNX ``Quant`` (ROUND) does it.

    ``x / scale + zero_point`` in float32 (like onnxruntime), clamp, then round half to
    even, so ties and saturation land exactly where qonnx puts them.
    """
    y = np.asarray(x, dtype=np.float32) / np.asarray(scale, np.float32) + np.asarray(zero_point, np.float32)
    y = np.clip(y, np.float32(qmin), np.float32(qmax))
    return round_half_even(y).astype(np.int64)


def rshift_rne(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift by ``shift`` >= 0 with round half to even (int64 in, int64 out).

    floor(x / 2**s) is ``x >> s``; the remainder decides: above half rounds up, exactly
    half rounds up only when the floor is odd.
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    s_pos = np.maximum(s, 1)
    floor = x >> s_pos
    rem = x & ((np.int64(1) << s_pos) - 1)
    half = np.int64(1) << (s_pos - 1)
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    rounded = floor + up.astype(np.int64)
    return np.where(s == 0, x, rounded)


@dataclass(frozen=True)
class Requant:
    """Parameters that move an integer tensor to a new scale and zero point.

    ``multiplier`` and ``shift`` have one entry per output channel (or one for the
    whole tensor). ``lo``/``hi`` are the clamp bounds in output codes; a fused ReLU
    raises ``lo`` to the zero point.
    """

    multiplier: tuple[int, ...]
    shift: tuple[int, ...]
    zero_point: int
    lo: int
    hi: int
    exact: bool  # True when M * 2**-S equals the real scale ratio exactly

    @property
    def pure_shift(self) -> bool:
        """True when every channel is a rounding right shift (M == 1): 32-bit C path."""
        return all(m == 1 for m in self.multiplier)

    def with_lo(self, lo: int) -> "Requant":
        return Requant(self.multiplier, self.shift, self.zero_point, max(self.lo, lo), self.hi, self.exact)

    def to_json(self) -> dict:
        return {
            "multiplier": list(self.multiplier),
            "shift": list(self.shift),
            "zero_point": self.zero_point,
            "lo": self.lo,
            "hi": self.hi,
            "exact": self.exact,
        }

    @staticmethod
    def from_json(d: dict) -> "Requant":
        return Requant(tuple(d["multiplier"]), tuple(d["shift"]), d["zero_point"], d["lo"], d["hi"], d["exact"])


def _multiplier_shift(ratio: float) -> tuple[int, int, bool]:
    """Split a positive real ratio into (M, S, exact) with ratio ~= M * 2**-S."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"scale ratio must be positive and finite, got {ratio}")
    mant, exp = math.frexp(ratio)  # ratio = mant * 2**exp, mant in [0.5, 1)
    if mant == 0.5:  # power of two: no multiplication needed
        if exp - 1 <= 0:
            s = 1 - exp
            return (1, s, True) if s <= MAX_SHIFT else (0, 0, False)
        return 2 ** (exp - 1), 0, True
    m = round(mant * 2**31)
    if m == 2**31:
        m, exp = 2**30, exp + 1
    s = 31 - exp
    if s < 0:
        raise ValueError(f"scale ratio {ratio} is too large for a Q31 multiplier")
    if s > MAX_SHIFT:  # |acc * M| < 2**62 so the rounded result is 0 for any input
        return 0, 0, False
    return m, s, False


def make_requant(ratio: np.ndarray, zero_point: int, lo: int, hi: int) -> Requant:
    """Requantization parameters for per-tensor or per-channel real ratios s_in / s_out."""
    ratio = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    parts = [_multiplier_shift(float(r)) for r in ratio]
    if len(set(parts)) == 1:  # one scale after all: emit per-tensor constants
        parts = parts[:1]
    return Requant(
        multiplier=tuple(p[0] for p in parts),
        shift=tuple(p[1] for p in parts),
        zero_point=int(zero_point),
        lo=int(lo),
        hi=int(hi),
        exact=all(p[2] for p in parts),
    )


def apply_requant(acc: np.ndarray, rq: Requant, channel_axis: int = -1) -> np.ndarray:
    """Simulate requantization of int64-held accumulators; per-channel along ``channel_axis``."""
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(rq.multiplier, dtype=np.int64)
    s = np.asarray(rq.shift, dtype=np.int64)
    if m.size > 1:
        shape = [1] * acc.ndim
        shape[channel_axis] = m.size
        m, s = m.reshape(shape), s.reshape(shape)
    y = rshift_rne(acc * m, s) + rq.zero_point
    return np.clip(y, rq.lo, rq.hi)


def accumulator_bound(weights: np.ndarray, bias: np.ndarray, x_lo: int, x_hi: int) -> np.ndarray:
    """Largest |partial sum| per output row of ``bias + sum_j w_j * x_j`` for x in [x_lo, x_hi].

    Order-independent: bounds every partial sum, whatever order the kernel adds in.
    ``weights`` is [out, fan_in]; the result has one entry per output.
    """
    w = np.abs(weights.astype(np.int64))
    xmax = max(abs(int(x_lo)), abs(int(x_hi)))
    return np.abs(bias.astype(np.int64)) + w.sum(axis=1) * xmax


def check_accumulator(node: str, bound: np.ndarray, what: str = "accumulator") -> int:
    """Raise ContractError if ``bound`` can leave int32; return the bits it needs.

    ``node`` describes the node for the message, e.g. "node 'fc1' (Gemm)".
    """
    worst = int(np.max(bound)) if np.size(bound) else 0
    bits = max(worst, 1).bit_length() + 1
    if worst > INT32_MAX:
        raise ContractError(
            f"{node}: the int32 {what} can reach {worst} (needs {bits} bits) for the given "
            "weights and input range, so the result would overflow; use fewer input features, "
            "narrower weights or activations, or split the layer"
        )
    return bits


def requant_for_scales(s_in: np.ndarray, s_out: float, zero_point: int, lo: int, hi: int) -> Requant:
    """Requant for real scales; the ratio is formed in float64 from the float32 scales."""
    return make_requant(np.asarray(s_in, np.float64) / np.float64(s_out), zero_point, lo, hi)


def is_power_of_two(x: np.ndarray) -> bool:
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    return bool(np.all([(v > 0 and math.frexp(float(v))[0] == 0.5) for v in x]))


def div_round(num: np.ndarray, den, mode: str = "ROUND") -> np.ndarray:
    """num / den for den > 0 (an int or a broadcastable array), rounded half to even
    ("ROUND") or down ("FLOOR"), exactly.

    Pooling divides by the window size with this; C: ``ek_div_rne`` / ``ek_div_floor``.
    """
    num = np.asarray(num, dtype=np.int64)
    q = num // den  # floor division, also for negative numerators
    if mode == "FLOOR":
        return q
    r2 = 2 * (num - q * den)
    up = (r2 > den) | ((r2 == den) & ((q & 1) == 1))
    return q + up.astype(np.int64)


def pool_divisor(s_in: float, s_out: float, window: int) -> tuple[int, int] | None:
    """(num, den) with s_in / (window * s_out) == num / den when the scale ratio is a power of two.

    Returns None for other ratios (those requantize through a Q31 multiplier).
    """
    ratio = np.float64(s_in) / np.float64(s_out)
    if not is_power_of_two(ratio):
        return None
    e = int(round(math.log2(ratio)))
    num, den = (2**e, window) if e >= 0 else (1, window * 2 ** (-e))
    g = math.gcd(num, den)
    return num // g, den // g
