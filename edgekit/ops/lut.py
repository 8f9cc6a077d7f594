"""Table lookup: an elementwise function of an (at most 8-bit) input, tabulated at build time."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.operators import Op, register


@dataclass
class LutAttrs:
    offset: int  # the input code of table entry 0 (the input's qmin)
    function: str  # what was tabulated (the ONNX op type), for reports


@register
class Lut(Op):
    name = "lut"
    attributes = LutAttrs
    template = "lut.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        x, table = inputs
        return [table.astype("int64")[x - self.attrs(node).offset]]

    def c_context(self, node, graph):
        return {"count": graph.tensors[node.inputs[0]].size, "offset": self.attrs(node).offset}
