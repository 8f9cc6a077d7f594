"""Reshape / Flatten: a new shape over the same row-major bytes, so no code and no copy."""
from __future__ import annotations

from ..ir.operators import Op, register


@register
class Reshape(Op):
    name = "reshape"
    alias = True

    def simulate(self, node, inputs, graph):
        shape = graph.tensors[node.outputs[0]].shape
        return [inputs[0].reshape((inputs[0].shape[0],) + tuple(shape))]
