"""Concatenation along channels (the last IR axis)."""
from __future__ import annotations

import numpy as np

from ..ir.operators import Op, register


@register
class Concat(Op):
    name = "concat"
    template = "concat.c.j2"

    def simulate(self, node, inputs, graph):
        return [np.concatenate(inputs, axis=-1)]

    def c_context(self, node, graph):
        ts = [graph.tensors[i] for i in node.inputs]
        y = graph.tensors[node.outputs[0]]
        return {"pixels": y.size // y.shape[-1], "channels": [t.shape[-1] for t in ts], "out_c": y.shape[-1]}
