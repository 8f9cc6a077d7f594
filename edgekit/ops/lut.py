"""Table lookup: an elementwise function of an (at most 8-bit) input, tabulated at build time."""
from __future__ import annotations

from ..ir.operators import Op, register


@register
class Lut(Op):
    name = "lut"
    template = "lut.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        x, table = inputs
        return [table.astype("int64")[x - node.attrs["offset"]]]

    def c_context(self, node, graph):
        return {"count": graph.tensors[node.inputs[0]].size, "offset": node.attrs["offset"]}
