"""Residual add: both inputs rescaled to a common scale, summed in int32, then requantized."""
from __future__ import annotations

from ..ir.contract import apply_requant
from ..ir.operators import Op, register


@register
class Add(Op):
    name = "add"
    template = "add.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        ta, tb = (graph.tensors[i] for i in node.inputs)
        ra, rb = node.attrs["in_requant"]
        acc = apply_requant(inputs[0] - ta.zero_point, ra) + apply_requant(inputs[1] - tb.zero_point, rb)
        rq = node.attrs.get("requant")
        return [apply_requant(acc, rq) if rq is not None else acc]

    def c_context(self, node, graph):
        ta, tb = (graph.tensors[i] for i in node.inputs)
        return {"count": ta.size, "zp_a": ta.zero_point, "zp_b": tb.zero_point, "rq_a": node.attrs["in_requant"][0],
                "rq_b": node.attrs["in_requant"][1], "requant": node.attrs.get("requant"),
                }
