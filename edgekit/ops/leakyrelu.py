"""LeakyRelu between quantizers, integer-exact with qonnx's float32 arithmetic.

qonnx computes ``Quant(LeakyRelu(x))`` in float32: ``v = (q - zp_in) * s_in``, then
``y = v`` for ``v >= 0`` and ``y = float32(alpha * v)`` below, then the output Quant rounds
``y / s_out + zp_out`` half to even. With ``n = q - zp_in`` this operator computes:

* ``n >= 0``: ``requant(n)``, the contract's requantization by ``s_in / s_out`` (attribute
  ``requant``), as the requantize operator does;
* ``n < 0``: float32's product first, in integers: with ``alpha = A * 2^-E`` (``A`` its 24-bit
  significand, attribute ``alpha_significand``), ``P = A * |n|`` exactly (< 2^40), rounded to 24
  significant bits half to even (float32's rounding: ``P ~ m * 2^d``); then
  ``zp_out - sign(alpha) * rshift_rne(m * M, S - d)`` clamped, where ``M * 2^-S`` is
  ``2^-E * s_in / s_out`` (attribute ``neg_requant``, a contract Requant: ``M = 1`` for
  power-of-two scales).

For power-of-two scales both branches are exactly what qonnx computes (the product's float32
rounding is the one rounding a plain requantization would miss: alpha = 0.01 and
``s_in / s_out = 2`` give ``-1.5`` for ``n = -75`` in float32, ``-1.49999997`` exactly).
The lowering checks every input code against qonnx's arithmetic and reports any difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant, apply_requant, rshift_rne
from ..ir.operators import Op, register

FLOAT32_SIGNIFICAND_BITS = 24


def round_to_float32(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative integers (< 2^53) rounded to 24 significant bits, half to even, as float32
    rounds them: returns (m, d) with the rounded value m * 2^d."""
    p = np.asarray(p, np.int64)
    bits = np.frexp(p.astype(np.float64))[1]  # bit length (exact below 2^53)
    d = np.maximum(bits - FLOAT32_SIGNIFICAND_BITS, 0)
    return rshift_rne(p, d), d


def negative_branch(n: np.ndarray, significand: int, negative_alpha: bool, neg_requant) -> np.ndarray:
    """The n < 0 branch before clamping: zp_out - sign(alpha) * round(float32(A * |n|) * M * 2^-S)."""
    m, d = round_to_float32(np.abs(np.asarray(n, np.int64)) * significand)
    r = rshift_rne(m * neg_requant.multiplier[0], neg_requant.shift[0] - d)
    return neg_requant.zero_point + (r if negative_alpha else -r)


@dataclass
class LeakyReluAttrs:
    requant: Requant  # the positive branch: s_in / s_out
    neg_requant: Requant  # the negative branch: M * 2^-S = 2^-E * s_in / s_out, with zero point and clamp
    alpha: float  # float32(alpha)
    alpha_significand: int  # A: float32(|alpha|) = A * 2^-E


@register
class LeakyRelu(Op):
    name = "leakyrelu"
    attributes = LeakyReluAttrs
    template = "leakyrelu.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        a = self.attrs(node)
        n = inputs[0].astype(np.int64) - graph.tensors[node.inputs[0]].zero_point
        pos = apply_requant(np.maximum(n, 0), a.requant)
        rq_neg = a.neg_requant
        neg = np.clip(negative_branch(n, a.alpha_significand, a.alpha < 0, rq_neg), rq_neg.lo, rq_neg.hi)
        return [np.where(n >= 0, pos, neg)]

    def c_context(self, node, graph):
        a = self.attrs(node)
        x = graph.tensors[node.inputs[0]]
        rq_neg = a.neg_requant
        return {"count": x.size, "zp_in": x.zero_point, "requant": a.requant, "alpha": a.alpha,
                "significand": a.alpha_significand, "negative_alpha": a.alpha < 0,
                "neg_multiplier": rq_neg.multiplier[0], "neg_shift": rq_neg.shift[0], "zp_out": rq_neg.zero_point,
                "lo": rq_neg.lo, "hi": rq_neg.hi}
