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
* TFLite models use TFLite's own requantization instead (``Requant.rounding ==
  "double"``): gemmlowp's SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT,
  exactly as the TFLite Micro reference kernels compute it (see the end of this module),
  with TFLite's rounding (``round_half_away``), multipliers, softmax and exp table, and the
  one-multiply form of the DSP kernels (``fast_double_rounding``; its C twin ``ek_dsp_rq``
  is inline assembly kept with those kernels, in ``templates/cortexm/ops_dsp/``).

No C twin: build-time tables (the exp table), the host-side input quantizers, and
``dequantized_to_codes`` (``verify`` turning float outputs back into codes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ContractError, ScaleRatioError

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


def round_half_away(x):
    """Round to nearest, ties away from zero: C's ``std::round`` / TFLite's ``TfLiteRound``,
    exactly, for float32 or float64 values (a scalar gives a Python int, an array int64 codes)."""
    y = np.asarray(x)
    t = np.trunc(y)
    r = np.where(np.abs(y - t) >= 0.5, t + np.sign(y), t)  # |y - t| is exact for binary floats
    return int(r) if r.ndim == 0 else r.astype(np.int64)


def quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Real values to integer codes, step for step as QONNX ``Quant`` (ROUND) does it.

    ``x / scale + zero_point`` in float32 (like onnxruntime), clamp, then round half to
    even, so ties and saturation land exactly where qonnx puts them.
    """
    y = np.asarray(x, dtype=np.float32) / np.asarray(scale, np.float32) + np.asarray(zero_point, np.float32)
    y = np.clip(y, np.float32(qmin), np.float32(qmax))
    return round_half_even(y).astype(np.int64)


def quantize_bipolar(x: np.ndarray, scale=None, zero_point=None, qmin=None, qmax=None) -> np.ndarray:
    """Real values to -1/+1 as QONNX ``BipolarQuant`` does it: +1 where ``x >= 0`` (in float32; -0.0
    included), else -1 (NaN too). The scale only scales the result, so the codes ignore it."""
    return np.where(np.asarray(x, dtype=np.float32) >= 0, 1, -1).astype(np.int64)


def input_quantizer(rounding: str):
    """The host-side input quantizer of an ``InputQuant.rounding``: (x, scale, zero_point, qmin, qmax) -> codes."""
    return {"qonnx": quantize, "tflite": quantize_tflite, "bipolar": quantize_bipolar}[rounding]


def quantize_tflite(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Real values to integer codes as TFLite's QUANTIZE (``AffineQuantize``) does it.

    ``round_half_away(x / scale)`` in float32, plus the zero point, then clamp: unlike
    QONNX, the zero point is added after rounding, and ties round away from zero.
    """
    y = np.asarray(x, dtype=np.float32) / np.float32(scale)
    # Saturate before rounding: a value past the code range (up to +-inf) must land on qmin/qmax,
    # where an int cast of it would wrap (the clamp then picks the wrong end). Any value beyond
    # these bounds saturates either way, so the codes in range are unchanged.
    lo, hi = np.float32(qmin - int(zero_point) - 1), np.float32(qmax - int(zero_point) + 1)
    y = np.clip(y, lo, hi)
    return np.clip(np.asarray(round_half_away(y), np.int64) + int(zero_point), qmin, qmax)


def dequantized_to_codes(y: np.ndarray, scale, zero_point) -> np.ndarray:
    """Output codes of dequantized values ``y = scale * (q - zero_point)`` (qonnx's float
    execution, hls4ml's C simulation, TFLite's DEQUANTIZE): ``round_half_even(y / scale +
    zero_point)`` in float64. ``y`` lies on the code grid up to float rounding, so the result is
    the code it came from; a NaN stays NaN (the comparison reports it)."""
    return round_half_even(np.asarray(y, np.float64) / np.asarray(scale, np.float64) + zero_point)


def rshift_rne(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift by ``shift`` >= 0 with round half to even (int64 in, int64 out).

    floor(x / 2**s) is ``x >> s``; the remainder decides: above half rounds up, exactly
    half rounds up only when the floor is odd. In one expression:
    ``(x + 2**(s-1) - 1 + (floor & 1)) >> s`` (for s = 0 both added terms are 0), which
    cannot overflow for |x| < 2**62 and s <= MAX_SHIFT.
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    shifting = (s > 0).astype(np.int64)
    below_half = ((np.int64(1) << np.maximum(s - 1, 0)) - 1) * shifting  # 2**(s-1) - 1, or 0
    y = x >> s
    y &= shifting  # the floor's parity, where s > 0
    y += x
    y += below_half
    y >>= s
    return y


def rshift_rne_float(x: np.ndarray, shift) -> np.ndarray:
    """:func:`rshift_rne` of integers held exactly in a float array (|x| < 2**24 in float32,
    2**53 in float64), in place, per channel along the last axis: scaling by 2**-s only moves
    the exponent, and ``rint`` rounds half to even. (The simulator's path for shift-only
    requantization of float GEMM sums.)"""
    x *= np.ldexp(np.ones(np.size(shift), x.dtype), -np.asarray(shift, np.int64).ravel())
    return np.rint(x, out=x)


@dataclass(frozen=True)
class Requant:
    """Parameters that move an integer tensor to a new scale and zero point.

    ``multiplier`` and ``shift`` have one entry per output channel (or one for the
    whole tensor). ``lo``/``hi`` are the clamp bounds in output codes; a fused ReLU
    raises ``lo`` to the zero point.

    ``rounding`` says how ``a * M * 2**-S`` is rounded: ``"half_even"`` (the default,
    one rounding of the 64-bit product, QONNX models) or ``"double"`` (TFLite's
    SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, see
    :func:`mul_dbl`). ``left_shift`` (double rounding only) multiplies the int32 input
    by ``2**left_shift`` first, as TFLite's ADD does with its 20-bit input shift.
    """

    multiplier: tuple[int, ...]
    shift: tuple[int, ...]
    zero_point: int
    lo: int
    hi: int
    exact: bool  # True when M * 2**-S equals the real scale ratio exactly
    rounding: str = "half_even"  # or "double" (TFLite)
    left_shift: int = 0  # double rounding only: input * 2**left_shift before the multiplication

    @property
    def pure_shift(self) -> bool:
        """True when every channel is a rounding right shift (M == 1): 32-bit C path."""
        return self.rounding == "half_even" and all(m == 1 for m in self.multiplier)

    def with_lo(self, lo: int) -> "Requant":
        return replace(self, lo=max(self.lo, lo))

    def to_json(self) -> dict:
        d = {
            "multiplier": list(self.multiplier),
            "shift": list(self.shift),
            "zero_point": self.zero_point,
            "lo": self.lo,
            "hi": self.hi,
            "exact": self.exact,
        }
        if self.rounding != "half_even":  # QONNX builds keep their ir.json unchanged
            d.update(rounding=self.rounding, left_shift=self.left_shift)
        return d

    @staticmethod
    def from_json(d: dict) -> "Requant":
        return Requant(tuple(d["multiplier"]), tuple(d["shift"]), d["zero_point"], d["lo"], d["hi"], d["exact"],
                       d.get("rounding", "half_even"), d.get("left_shift", 0))


def _multiplier_shift(ratio: float) -> tuple[int, int, bool]:
    """Split a positive real ratio into (M, S, exact) with ratio ~= M * 2**-S."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ScaleRatioError(f"scale ratio must be positive and finite, got {ratio}")
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
        raise ScaleRatioError(f"scale ratio {ratio} is too large for a Q31 multiplier")
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
    if rq.rounding == "double":
        y = mul_dbl(acc, m, s, rq.left_shift) + rq.zero_point
    else:
        if not any(rq.shift):  # a multiplication only (2^k and 1 for power-of-two scales): nothing to round
            y = acc * m
        else:
            y = rshift_rne(acc if rq.pure_shift else acc * m, s)
        y += rq.zero_point  # y is a new array: added to and clipped in place
    if isinstance(y, np.ndarray) and y.ndim:
        return np.clip(y, rq.lo, rq.hi, out=y)
    return np.clip(y, rq.lo, rq.hi)


def apply_requant_float(acc: np.ndarray, rq: Requant) -> np.ndarray:
    """:func:`apply_requant` of a shift-only ``rq`` (``rq.pure_shift``) on exact integers held in
    a float array (see :func:`rshift_rne_float`; per channel along the last axis), as int64.
    Works in place on ``acc``."""
    y = rshift_rne_float(acc, rq.shift)
    y += rq.zero_point
    np.clip(y, rq.lo, rq.hi, out=y)
    return y.astype(np.int64)


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


def requants_in(value) -> list[Requant]:
    """Every Requant held in ``value`` (a node's attrs), however deeply nested: a fused residual
    add or a concat keeps its own requantizations inside dicts and lists."""
    if isinstance(value, Requant):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [rq for v in value for rq in requants_in(v)]
    return []


def is_power_of_two(x: np.ndarray) -> bool:
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    return bool(np.all([(v > 0 and math.frexp(float(v))[0] == 0.5) for v in x]))


def div_round(num: np.ndarray, den, mode: str = "ROUND") -> np.ndarray:
    """num / den for den > 0 (an int or a broadcastable array), rounded half to even
    ("ROUND"), down ("FLOOR") or half away from zero ("AWAY"), exactly.

    Pooling divides by the window size with this; C: ``ek_div_rne`` / ``ek_div_floor`` /
    ``ek_div_away``. "AWAY" is TFLite's average pool: ``n > 0 ? (n + d/2) / d : (n - d/2) / d``
    with C's truncating division.
    """
    num = np.asarray(num, dtype=np.int64)
    if mode == "AWAY":
        den = np.asarray(den, dtype=np.int64)
        t = np.where(num > 0, num + den // 2, num - den // 2)
        return np.where(t >= 0, t // den, -((-t) // den))  # truncating division
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


# ---------------------------------------------------------------------------------------
# TFLite's integer arithmetic (TFLite models; docs/integer-contract.md, section 9)
# ---------------------------------------------------------------------------------------
def _wrap32(x: np.ndarray) -> np.ndarray:
    """Two's complement wrap of int64-held values to int32 (what C's int32 arithmetic gives)."""
    return ((np.asarray(x, dtype=np.int64) + 2**31) & (2**32 - 1)) - 2**31


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values: ``(a*b + nudge) / 2**31``
    with C's truncating division, nudge ``2**30`` for ``a*b >= 0`` and ``1 - 2**30`` below;
    ``INT32_MIN * INT32_MIN`` saturates to INT32_MAX. (Equals ``(a*b + 2**30) >> 31``.)"""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a*b| <= 2**62: exact in int64
    t = ab + np.where(ab >= 0, np.int64(2**30), np.int64(1 - 2**30))
    q = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def rdbp(x: np.ndarray, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT on int32 values: ``x / 2**exponent`` rounded to nearest,
    ties away from zero; ``0 <= exponent <= 31``."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def mul_dbl(x: np.ndarray, m, s, left_shift: int = 0) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (double rounding) in edgekit's (M, S) form.

    TFLite's shift is ``31 - S``: ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(
    x * 2**left, M), right)`` with ``left = max(31 - S, 0) + left_shift`` and
    ``right = max(S - 31, 0)``. ``x * 2**left`` is an int32 product, wrapped like C's.
    C: ``ek_mul_dbl``.
    """
    s = np.asarray(s, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    left = np.maximum(31 - s, 0) + left_shift
    right = np.maximum(s - 31, 0)
    x = np.asarray(x, dtype=np.int64)
    if left.any() or x.ndim == 0 or (x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX)):
        xs = _wrap32(x << left)
    else:
        xs = x  # already int32 values, nothing shifted: the wrap changes nothing
    if x.ndim == 0 or np.any(m == INT32_MIN):  # the saturating case (and scalars): the plain composition
        return rdbp(srdhm(xs, m), right)
    # The same arithmetic with fewer passes over a large array (tests/test_sim_exact.py):
    # srdhm with m != INT32_MIN is (xs * m + 2^30) >> 31, and rdbp by e > 0 is
    # (y + 2^(e-1) - (y < 0)) >> e (ties away from zero).
    y = xs * m
    y += np.int64(1 << 30)
    y >>= 31
    if right.any():
        shifting = right > 0
        below_zero = (y < 0) & shifting
        y += (np.int64(1) << np.maximum(right - 1, 0)) * shifting
        y -= below_zero
        y >>= right
    return y


def quantize_multiplier_tflite(ratio: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier (double rounding build) as edgekit's (M, S), ratio ~= M * 2**-S.

    ``frexp`` then ``M = round(q * 2**31)`` half away from zero (TfLiteRound); a mantissa of
    2**31 becomes 2**30 with the exponent raised; ratios below about 2**-31 flush to
    M = 0 (stored with S = 31, so the result is 0 for every input).
    """
    if ratio < 0 or not math.isfinite(ratio):
        raise ScaleRatioError(f"scale ratio must be non-negative and finite, got {ratio}")
    if ratio == 0:
        return 0, 31
    q, e = math.frexp(ratio)
    m = round_half_away(q * 2**31)  # TfLiteRound; q * 2**31 is exact (a power-of-two scaling)
    if m == 2**31:
        m, e = m // 2, e + 1
    if e < -31:
        return 0, 31
    if e > 31:
        raise ScaleRatioError(f"scale ratio {ratio} is too large for TFLite's requantization")
    return m, 31 - e


def tflite_requant(ratio: np.ndarray, zero_point: int, lo: int, hi: int, left_shift: int = 0) -> Requant:
    """Double-rounding Requant for per-tensor or per-channel real ratios (computed by the
    caller in float64 exactly as TFLite Micro computes them)."""
    ratio = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    parts = [quantize_multiplier_tflite(float(r)) for r in ratio]
    if len(set(parts)) == 1:
        parts = parts[:1]
    if any(left_shift + max(31 - p[1], 0) > 31 for p in parts):
        raise ScaleRatioError("TFLite requantization would shift an int32 left by more than 31 bits")
    return Requant(tuple(p[0] for p in parts), tuple(p[1] for p in parts), int(zero_point), int(lo), int(hi),
                   False, "double", int(left_shift))


# TFLite's double rounding as one 64-bit multiply-add (the DSP kernels' epilogue; C: ek_dsp_rq in
# templates/cortexm/ops_dsp/dsp_common.c.j2, inline assembly: SMLAL, Armv7-M and later).
def fast_double_rounding(rq) -> dict | None:
    """Per-channel constants for the one-multiply form of TFLite's double rounding, or None.

    For ``M`` in [2^30, 2^31) and ``e = S - 31`` >= 2, with ``x = SRDHM(acc, M)``:
    ``RDBP(x, e) + zp == floor((acc*M + A - [acc < 0]*2^31) / 2^(31+e))`` with
    ``A = 2^30 + 2^(30+e) + zp*2^(31+e)`` (SRDHM is floor((acc*M + 2^30) / 2^31); RDBP adds
    2^(e-1), minus 1 for x < 0, and floors; x < 0 exactly when acc < 0 because M >= 2^30;
    nested floors of divisions by powers of two are one floor). The low word of A is 2^30,
    so C seeds SMLAL with lo = 2^30 | (acc & 2^31), hi = Ahi + (acc >> 31), and the result
    is hi >> (e - 1). Every 64-bit intermediate stays below 2^63 (checked here).
    """
    if rq is None or rq.rounding != "double" or rq.left_shift != 0:
        return None
    ms, ahis, shs = [], [], []
    for m, s in zip(rq.multiplier, rq.shift):
        e = s - 31
        if not (2**30 <= m < 2**31) or e < 2 or e > 30:
            return None
        a = 2**30 + 2**(30 + e) + rq.zero_point * 2**(31 + e)
        ahi = (a - 2**30) >> 32
        if not -(2**31) <= ahi < 2**31 or abs(a) + 2**31 >= 2**62:
            return None
        ms.append(m)
        ahis.append(ahi)
        shs.append(e - 1)
    return {"m": ms, "ahi": ahis, "sh": shs, "per_channel": len(ms) > 1}


def dsp_rq(acc: np.ndarray, m: int, ahi: int, sh: int) -> np.ndarray:
    """What ek_dsp_rq computes for int32 accumulators, with the constants of
    :func:`fast_double_rounding`: (hi:lo) = (ahi + (acc >> 31) : 2^30 | (acc & 2^31)) + acc * m
    as a 64-bit sum, then hi >> sh. Equals mul_dbl(acc, M, S) + zp (tests/test_contract.py)."""
    acc = np.asarray(acc, dtype=np.int64)
    lo = np.int64(0x40000000) | (acc & np.int64(0x80000000))
    hi = np.int64(ahi) + (acc >> 31)
    return (((hi << 32) + lo + acc * np.int64(m)) >> 32) >> sh


def sat_shl(x: np.ndarray, k: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<k> for k > 0: ``x * 2**k`` saturated to int32."""
    x = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - k)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, _wrap32(x << k)))


def one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 on Q0.31 raw values (Newton-Raphson, 3 steps)."""
    a = np.asarray(a, dtype=np.int64)
    s = a + INT32_MAX  # RoundingHalfSum(a, One) with One = INT32_MAX (Q0.31)
    t = s + np.where(s >= 0, 1, -1)
    half_den = np.where(t >= 0, t // 2, -((-t) // 2))
    x = 1515870810 + srdhm(half_den, -1010580540)  # 48/17 - 32/17 * d, Q2.29
    for _ in range(3):
        one_minus = (1 << 29) - srdhm(half_den, x)  # Q2.29
        x = x + sat_shl(srdhm(x, one_minus), 2)  # Q4.27 * 4 -> Q2.29
    return sat_shl(x, 1)  # ExactMulByPot<-1> then Rescale<0>


def tflite_reciprocal(sum_of_exps: np.ndarray, integer_bits: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: (Q0.31 ``1 / (1 + x)`` of the normalised sum, num_bits_over_unit).

    ``sum_of_exps`` > 0 is a Q12.19 value; C: ``ek_tfl_reciprocal``.
    """
    x = np.asarray(sum_of_exps, dtype=np.int64)
    clz = 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)  # x < 2**31 is exact in float64
    shifted_minus_one = (x << clz) - 2**31  # uint32 shift minus 2**31, as int32
    return one_over_one_plus_x(shifted_minus_one), integer_bits - clz


def tflite_softmax(x: np.ndarray, exp_table: np.ndarray) -> np.ndarray:
    """TFLite's int8 softmax over the last axis (output scale 1/256, zero point -128).

    ``exp_table[d]`` is gemmlowp's Q0.31 ``exp`` of the scaled input difference ``-d``
    (0 where TFLite skips the element, below ``diff_min``), built at lowering time.
    """
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exp_table, dtype=np.int64)[x.max(axis=-1, keepdims=True) - x]
    total = rdbp(e, 12).sum(axis=-1, keepdims=True)  # Rescale<12>: Q0.31 -> Q12.19
    scale, bits_over_unit = tflite_reciprocal(total)
    q = rdbp(srdhm(scale, e), bits_over_unit + 31 - 8) - 128
    return np.clip(q, -128, 127)


# gemmlowp's exp for TFLite's int8 softmax. Build time only: the table it fills is a constant of
# the model (EXP in the generated C), so there is no C twin; tests/test_tflite.py compares the
# tables' softmax with the TFLite Micro interpreter.
def _srdhm(a: int, b: int) -> int:
    return int(srdhm(np.int64(a), np.int64(b)))


def _rdbp(x: int, e: int) -> int:
    return int(rdbp(np.int64(x), e))


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
        int(sat_shl(np.int64(a_mod), integer_bits)))  # Rescale<0>
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent and remainder & (1 << (frac_bits + exponent)):
            result = _srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return INT32_MAX if a == 0 else result


def softmax_exp_table(beta: float, input_scale: float) -> np.ndarray:
    """EXP[d] for d = max - x in 0..255, exactly as TFLite's int8 softmax computes exp(-d)."""
    real = min(float(np.float64(np.float32(beta))) * float(np.float64(np.float32(input_scale))) * (1 << 26),
               (1 << 31) - 1.0)  # PreprocessSoftmaxScaling, 5 integer bits
    if not real > 1.0:
        raise ScaleRatioError("beta * input scale is too small for TFLite's softmax (multiplier must exceed 1)")
    m, s = quantize_multiplier_tflite(real)
    left = 31 - s  # TFLite's left shift (>= 0)
    diff_min = -math.floor(1.0 * 31 * (1 << 26) / (1 << left))  # CalculateInputRadius(5, left)
    table = np.zeros(256, np.int64)
    for d in range(256):
        if -d >= diff_min:
            scaled = _srdhm(-d * (1 << left), m)  # MultiplyByQuantizedMultiplierGreaterThanOne
            table[d] = exp_on_negative_values(scaled)
    return table
