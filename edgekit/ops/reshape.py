"""Reshape / Flatten: a new shape over the same row-major bytes, so no code and no copy."""
from __future__ import annotations

from ..ir.operators import HlsLayer, Op, register


@register
class Reshape(Op):
    name = "reshape"
    alias = True
    hls_layers = (HlsLayer("Reshape", "pass-through"), HlsLayer("Flatten", "pass-through"),
                  HlsLayer("Transpose", "pass-through"))  # layout only: hls4ml's channels-last moves
    float32_inputs = True  # the same codes in a new shape

    def simulate(self, node, inputs, graph):
        shape = graph.tensors[node.outputs[0]].shape
        return [inputs[0].reshape((inputs[0].shape[0],) + tuple(shape))]
