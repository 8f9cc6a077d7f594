"""Exact integer products for the simulator's accumulating kernels (conv2d, dense).

Integer GEMMs run on float BLAS only where the integer contract's accumulator bound
(``contract.accumulator_bound``: the largest |partial sum| for any input in the tensor's
range, whatever order the sum is taken in) proves every partial sum exact: below 2^24 in
float32, below 2^53 in float64. A product and every partial sum are then integers the
float type holds, so BLAS's order of summation and its fused multiply-adds round nothing.
A reduction too long for one float32 GEMM is split along K into pieces that each stay
below 2^24, summed in int64; a bound at or above 2^53 takes numpy's int64 product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import contract
from ..ir.contract import Requant, accumulator_bound, apply_requant

FLOAT32_EXACT_BELOW = 2 ** 24  # every integer of magnitude <= 2^24 is a float32
FLOAT64_EXACT_BELOW = 2 ** 53
EXACT_BELOW = {np.float32: FLOAT32_EXACT_BELOW, np.float64: FLOAT64_EXACT_BELOW}
# More float32 pieces than this cost more (copies, int64 sums) than one float64 GEMM saves.
MAX_FLOAT32_PIECES = 4


@dataclass(frozen=True)
class GemmPlan:
    """How ``x @ w.T`` is computed exactly: in ``dtype`` over the K ranges ``pieces``."""

    dtype: type  # np.float32, np.float64 or np.int64
    pieces: tuple[tuple[int, int], ...]  # [k0, k1) ranges, each one GEMM
    bound: int  # the contract's bound on every partial sum of the whole reduction, bias included

    @property
    def float_sums(self) -> bool:
        """True when the whole sum, bias included, is exact in ``dtype`` (a float): one GEMM."""
        return self.bound < EXACT_BELOW.get(self.dtype, 0)


def plan_gemm(weights: np.ndarray, bias: np.ndarray, x_lo: int, x_hi: int) -> GemmPlan:
    """Choose the arithmetic for ``bias + x @ weights.T`` with ``weights`` [out, K] and x in [x_lo, x_hi]."""
    w = np.asarray(weights).reshape(weights.shape[0], -1)
    k = w.shape[1]
    bound = int(accumulator_bound(w, np.asarray(bias), x_lo, x_hi).max(initial=0))
    if bound < FLOAT32_EXACT_BELOW:
        return GemmPlan(np.float32, ((0, k),), bound)
    pieces = float32_pieces(w, max(abs(int(x_lo)), abs(int(x_hi))))
    if pieces is not None:
        return GemmPlan(np.float32, pieces, bound)
    if bound < FLOAT64_EXACT_BELOW:
        return GemmPlan(np.float64, ((0, k),), bound)
    return GemmPlan(np.int64, ((0, k),), bound)


def float32_pieces(w: np.ndarray, x_abs_max: int) -> tuple[tuple[int, int], ...] | None:
    """Split K greedily into ranges whose bound stays below 2^24 (None: more than MAX_FLOAT32_PIECES)."""
    col = np.abs(w.astype(np.int64)) * x_abs_max  # [out, K]: each term's largest magnitude
    if col.size == 0 or col.max() >= FLOAT32_EXACT_BELOW:
        return None
    cum = np.concatenate([np.zeros((w.shape[0], 1), np.int64), np.cumsum(col, axis=1)], axis=1)
    pieces, k0, k = [], 0, w.shape[1]
    while k0 < k:
        # the bound of [k0, k1) is non-decreasing in k1: the first k1 that reaches 2^24 ends the piece
        reach = (cum[:, k0 + 1:] - cum[:, k0:k0 + 1]).max(axis=0)
        k1 = k0 + int(np.searchsorted(reach, FLOAT32_EXACT_BELOW, side="left"))
        pieces.append((k0, k1))
        if len(pieces) > MAX_FLOAT32_PIECES:
            return None
        k0 = k1
    return tuple(pieces)


@dataclass(frozen=True)
class GemmWeights:
    """A layer's weights laid out once per graph (``Op.prepare_node``): the plan, the weights
    [K, out] in the plan's dtype for ``x @ w_t``, and, where PyTorch's float32 convolution may
    compute the layer (``float32_conv``), its float32 weights (out, in / groups, kh, kw)."""

    plan: GemmPlan
    w_t: np.ndarray
    torch_weights: np.ndarray | None = None


def gemm_weights(weights: np.ndarray, bias: np.ndarray, x_lo: int, x_hi: int) -> GemmWeights:
    """:func:`plan_gemm` for ``weights`` [out, K], with the weights transposed into its dtype."""
    w = np.asarray(weights).reshape(weights.shape[0], -1)
    plan = plan_gemm(w, bias, x_lo, x_hi)
    return GemmWeights(plan, np.ascontiguousarray(w.T, plan.dtype))


def exact_matmul(x: np.ndarray, w_t: np.ndarray, plan: GemmPlan) -> np.ndarray:
    """``x @ w_t`` exactly, for ``x`` [M, K] and ``w_t`` [K, out] already in ``plan.dtype``: in
    ``plan.dtype`` when ``plan.float_sums`` (exact integers in floats), else int64."""
    if plan.float_sums or plan.dtype is np.int64:
        return x @ w_t
    acc = np.zeros((x.shape[0], w_t.shape[1]), np.int64)
    for k0, k1 in plan.pieces:
        acc += (x[:, k0:k1] @ w_t[k0:k1]).astype(np.int64)
    return acc



def requantized(acc: np.ndarray, bias: np.ndarray | None, rq: Requant | None,
                keep_float: bool = False) -> np.ndarray:
    """``rq(acc + bias)`` as int64 (no ``rq``: the int32 accumulator itself; no ``bias``: ``acc``
    has it already); with ``keep_float``, a float32 result stays float32 (exact integer codes).

    ``acc`` is int64, or a float array of exact integers whose sums with the bias the plan's
    bound keeps exact. A requantization that is a plain rounding shift (M = 1, power-of-two
    scales) stays in float (``contract.rshift_rne_float``: ``rint(acc * 2^-s)`` is
    ``rshift_rne(acc, s)`` there), with half the memory traffic of int64.
    """
    if bias is not None:
        acc += bias.astype(acc.dtype)
    if acc.dtype == np.int64:
        return apply_requant(acc, rq) if rq is not None else acc
    if rq is not None and rq.pure_shift:
        y = float_requant(acc, rq)
        return y if keep_float and y.dtype == np.float32 else y.astype(np.int64)
    acc = acc.astype(np.int64)
    return apply_requant(acc, rq) if rq is not None else acc


# --- requantization of small integers in float ---------------------------------------------

def requant_reach(rq: Requant, x_abs: int) -> int:
    """The largest |output| of a half-even ``rq`` before its clamp, for |input| <= ``x_abs``."""
    return ((x_abs * max(rq.multiplier)) >> min(rq.shift)) + 1 + abs(rq.zero_point)  # rounding adds at most 1


def requant_bound(rq: Requant, x_abs: int) -> int:
    """The largest |output| of ``rq`` for inputs of magnitude at most ``x_abs``."""
    clamp = max(abs(rq.lo), abs(rq.hi))
    return clamp if rq.rounding != "half_even" else min(clamp, requant_reach(rq, x_abs))


def float_requant_exact(rq: Requant, x_abs: int, dtype=np.float32) -> bool:
    """Whether :func:`float_requant` in ``dtype`` equals ``contract.apply_requant`` for integer
    inputs of magnitude at most ``x_abs``: a rounding shift (M = 1) or a multiplication only
    (S = 0), with every intermediate an integer (or an exact power-of-two fraction) below the
    float's exact-integer bound."""
    if rq.rounding != "half_even" or not (rq.pure_shift or not any(rq.shift)):
        return False
    exact_below = EXACT_BELOW[dtype]
    return x_abs < exact_below and x_abs * max(rq.multiplier) + abs(rq.zero_point) + 1 < exact_below


def float_requant(x: np.ndarray, rq: Requant, x_abs: int | None = None) -> np.ndarray:
    """``contract.apply_requant`` on exact integers held in a float array, in place, for a
    requantization that :func:`float_requant_exact` accepts (per channel along the last axis).
    Given ``x_abs`` (the inputs' largest magnitude), steps that change nothing are skipped."""
    if rq.pure_shift:
        if any(rq.shift):
            x = contract.rshift_rne_float(x, rq.shift)  # through the module: tests replace it
    elif any(m != 1 for m in rq.multiplier):
        x *= np.asarray(rq.multiplier, x.dtype) if len(rq.multiplier) > 1 else x.dtype.type(rq.multiplier[0])
    if rq.zero_point:
        x += rq.zero_point
    if x_abs is None or not rq.lo <= -requant_reach(rq, x_abs) <= requant_reach(rq, x_abs) <= rq.hi:
        np.clip(x, rq.lo, rq.hi, out=x)
    return x


def codes_minus(x: np.ndarray, zero_point: int, dtype) -> np.ndarray:
    """``x - zero_point`` as a new ``dtype`` array."""
    out = np.empty(x.shape, dtype)
    np.subtract(x, zero_point, out=out, casting="unsafe")
    return out


def add_requantized(a: np.ndarray, zp_a: int, a_range: tuple[int, int], b: np.ndarray, zp_b: int,
                    b_range: tuple[int, int], ra: Requant, rb: Requant, rq: Requant | None,
                    a_owned: bool = False, keep_float: bool = False) -> np.ndarray:
    """The residual add's arithmetic (ops/add.py, conv2d's fused residual) as int64:
    ``rq(ra(a - zp_a) + rb(b - zp_b))`` for codes ``a`` in ``a_range`` and ``b`` in ``b_range``
    (either may be a float32 array of exact integers; ``a_owned``: ``a`` may be overwritten). In
    float32 when every step is exact there (8-bit codes, shifts, small power-of-two multipliers),
    else with the contract's int64 functions; ``keep_float`` returns that float32 result as it is."""
    a_abs = max(abs(a_range[0] - zp_a), abs(a_range[1] - zp_a))
    b_abs = max(abs(b_range[0] - zp_b), abs(b_range[1] - zp_b))
    total = requant_bound(ra, a_abs) + requant_bound(rb, b_abs)
    if (float_requant_exact(ra, a_abs) and float_requant_exact(rb, b_abs)
            and (float_requant_exact(rq, total) if rq is not None else total < FLOAT32_EXACT_BELOW)):
        if a.dtype == np.float32 and a_owned:
            if zp_a:
                a -= zp_a
        else:
            a = codes_minus(a, zp_a, np.float32)
        a = float_requant(a, ra, a_abs)
        a += float_requant(codes_minus(b, zp_b, np.float32), rb, b_abs)
        y = float_requant(a, rq, total) if rq is not None else a
        return y if keep_float else y.astype(np.int64)
    acc = (apply_requant(np.asarray(a, np.int64) - zp_a, ra)
           + apply_requant(np.asarray(b, np.int64) - zp_b, rb))
    return apply_requant(acc, rq) if rq is not None else acc
