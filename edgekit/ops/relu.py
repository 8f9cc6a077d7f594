"""ReLU on integer codes: ``max(q, zero_point)`` (the code of real 0)."""
from __future__ import annotations

import numpy as np

from ..ir.operators import HlsLayer, Op, register


@register
class Relu(Op):
    name = "relu"
    hls_layers = (HlsLayer("ReLU", "activation"),)
    template = "relu.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        zp = graph.tensors[node.inputs[0]].zero_point
        return [np.maximum(inputs[0], zp)]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        return {"count": t.size, "zero_point": t.zero_point}
