"""Residual add: both inputs rescaled to a common scale, summed in int32, then requantized."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.contract import Requant
from ..ir.operators import Op, register
from ._gemm import add_requantized


@dataclass
class AddAttrs:
    in_requant: list[Requant]  # each input (minus its zero point) onto the common scale
    requant: Requant | None = None  # the int32 sum onto the output grid (None: int32 out)


@register
class Add(Op):
    name = "add"
    attributes = AddAttrs
    template = "add.c.j2"
    accumulates = True
    float32_inputs = True
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        ta, tb = (graph.tensors[i] for i in node.inputs)
        a = self.attrs(node)
        return [add_requantized(inputs[0], ta.zero_point, (ta.qmin, ta.qmax), inputs[1], tb.zero_point,
                                (tb.qmin, tb.qmax), *a.in_requant, a.requant, keep_float=True)]

    def c_context(self, node, graph):
        ta, tb = (graph.tensors[i] for i in node.inputs)
        a = self.attrs(node)
        return {"count": ta.size, "zp_a": ta.zero_point, "zp_b": tb.zero_point, "rq_a": a.in_requant[0],
                "rq_b": a.in_requant[1], "requant": a.requant}
