"""Fixed-point types for hls4ml, derived from edgekit's integer IR instead of guessed.

An IR tensor holds integer codes ``q`` with ``real = scale * (q - zero_point)``. With a
power-of-two scale ``2**e`` and zero point 0 the same numbers are exactly the values of
an ``ap_fixed<W, I>`` with ``W = bits`` and ``I = bits + e`` (its LSB is ``2**(I - W) =
2**e``), so hls4ml can compute on them without any multiplier for the scale:

* activations and the input: ``ap_(u)fixed<bits, bits + e, AP_RND_CONV, AP_SAT>``; a
  narrow quantizer (``qmin = -2**(bits-1) + 1``) saturates symmetrically (``AP_SAT_SYM``).
  Casting a wider value into such a type rounds half to even (``AP_RND_CONV``, the
  contract's rounding) and clamps to the code range (the contract's saturation), so the
  cast *is* edgekit's requantization ``clamp(rshift_rne(acc, s), lo, hi)``.
* weights: the weight quantizer's width and scale.
* accumulators: LSB ``2**(e_x + e_w)`` (the product of input and weight LSBs, so every
  product and partial sum is exact) and the *smallest* width that holds
  ``edgekit.ir.contract.accumulator_bound`` - the exact bound on every partial sum for the
  model's own weights and the input's code range - plus the sign bit. hls4ml's own
  inference uses ``w_bits + x_bits + ceil(log2(n_in))`` widened by the 32-bit bias type,
  typically 33 bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...ir import contract
from ...ir.graph import Tensor

ROUND = "RND_CONV"  # round half to even: the integer contract's rounding
EXACT = "TRN"  # no rounding ever happens (the value always fits the grid)


@dataclass(frozen=True)
class FixedType:
    """An ``ap_fixed``/``ap_ufixed`` type: ``width`` bits, ``integer`` of them left of the point."""

    width: int
    integer: int
    signed: bool
    rounding: str = EXACT  # hls4ml spelling: TRN, RND_CONV
    saturation: str = "WRAP"  # WRAP, SAT, SAT_SYM

    @property
    def lsb_exp(self) -> int:
        """log2 of the least significant bit."""
        return self.integer - self.width

    @property
    def code_range(self) -> tuple[int, int]:
        if self.signed:
            lo = -(2 ** (self.width - 1)) + (1 if self.saturation == "SAT_SYM" else 0)
            return lo, 2 ** (self.width - 1) - 1
        return 0, 2**self.width - 1

    def hls4ml(self) -> str:
        """hls4ml's precision string, e.g. ``fixed<8,3,RND_CONV,SAT>``."""
        base = "fixed" if self.signed else "ufixed"
        if self.rounding == EXACT and self.saturation == "WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},{self.rounding},{self.saturation}>"

    def cpp(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        if self.rounding == EXACT and self.saturation == "WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding},AP_{self.saturation}>"

    def __str__(self) -> str:
        return self.hls4ml()

    @staticmethod
    def from_hls4ml(p) -> "FixedType | None":
        """From an hls4ml precision object (FixedPrecisionType / IntegerPrecisionType); None otherwise."""
        from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

        if isinstance(p, FixedPrecisionType):
            return FixedType(int(p.width), int(p.integer), bool(p.signed), p.rounding_mode.name,
                             p.saturation_mode.name)
        if isinstance(p, IntegerPrecisionType):
            return FixedType(int(p.width), int(p.width), bool(p.signed))
        return None

    def same_values(self, other: "FixedType") -> bool:
        """Same grid and range (rounding/saturation modes aside)."""
        return (self.width, self.integer, self.signed) == (other.width, other.integer, other.signed)


def pow2_exponent(scale) -> int | None:
    """``e`` with every entry of ``scale == 2**e``, or None (float scales, per-channel differences)."""
    s = np.unique(np.ravel(np.asarray(scale, dtype=np.float64)))
    if s.size != 1 or not contract.is_power_of_two(s):
        return None
    return math.frexp(float(s[0]))[1] - 1


def tensor_type(t: Tensor) -> FixedType | None:
    """The hls4ml type that holds tensor ``t`` exactly, or None where no fixed-point type can.

    Rounding half to even and saturation make a cast into this type equal to the
    contract's requantization onto ``t``'s grid and range.
    """
    e = pow2_exponent(t.scale)
    if e is None or t.zero_point != 0:
        return None
    narrow = t.signed and t.qmin == -(2 ** (t.bits - 1)) + 1
    return FixedType(t.bits, t.bits + e, t.signed, ROUND, "SAT_SYM" if narrow else "SAT")


def bits_for(bound: int, signed: bool = True) -> int:
    """Width of the smallest two's complement (or unsigned) integer that holds ``[-bound, bound]``."""
    bound = int(bound)
    return max(bound, 1).bit_length() + (1 if signed else 0)


def accumulator_type(x: Tensor, w: Tensor, weight_codes: np.ndarray, bias_codes: np.ndarray,
                     rows_axis: int = 0) -> tuple[FixedType, int]:
    """Tight accumulator type and the bound it was sized for.

    ``weight_codes`` is reshaped to ``[out, fan_in]`` along ``rows_axis`` (the output axis);
    the bound covers every partial sum of ``bias + sum w * x`` for ``x`` in the input's code
    range, whatever the order of summation (``contract.accumulator_bound``).
    """
    codes = np.moveaxis(np.asarray(weight_codes, np.int64), rows_axis, 0)
    codes = codes.reshape(codes.shape[0], -1)
    bound = int(np.max(contract.accumulator_bound(codes, np.asarray(bias_codes, np.int64).ravel(),
                                                  x.qmin - x.zero_point, x.qmax - x.zero_point)))
    e = pow2_exponent(x.scale) + pow2_exponent(w.scale)
    width = bits_for(bound)
    return FixedType(width, width + e, True), bound
