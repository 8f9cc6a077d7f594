"""TFLite's int8 softmax (docs/integer-contract.md, section 9): gemmlowp fixed point, exactly.

Inputs: the int8 logits and a 256-entry int32 table of gemmlowp's Q0.31 ``exp`` of
every possible (scaled) difference to the row maximum, built at lowering time. Per row:
``sum = sum_i RDBP(EXP[max - x_i], 12)`` (Q12.19), ``scale = 1 / sum`` through TFLite's
Newton-Raphson reciprocal, ``out_i = RDBP(SRDHM(scale, EXP[max - x_i]), bits + 23) - 128``.
The output is always scale 1/256, zero point -128 (TFLite requires it).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.contract import tflite_softmax
from ..ir.operators import Op, register


@dataclass
class SoftmaxTfliteAttrs:
    beta: float  # TFLite's beta, already folded into the exp table (kept for reports)


@register
class SoftmaxTflite(Op):
    name = "softmax_tflite"
    attributes = SoftmaxTfliteAttrs
    template = "softmax_tflite.c.j2"
    inplace = True  # each row is read whole before its first write; out[i] is written after in[i] is read

    def simulate(self, node, inputs, graph):
        x, table = inputs
        return [tflite_softmax(x, table)]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        depth = t.shape[-1] if t.shape else 1
        return {"rows": t.size // depth, "depth": depth}
