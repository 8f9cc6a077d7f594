"""Requantize an integer tensor to another scale and zero point (per-tensor)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant, apply_requant
from ..ir.operators import HlsLayer, Op, register


@dataclass
class RequantizeAttrs:
    requant: Requant


@register
class Requantize(Op):
    name = "requantize"
    attributes = RequantizeAttrs
    # a quantizer becomes a linear (or, fused with a ReLU, relu) activation: a rounding point
    hls_layers = (HlsLayer("Activation", "activation"),)
    template = "requantize.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        zp_in = graph.tensors[node.inputs[0]].zero_point
        return [apply_requant(inputs[0].astype(np.int64) - zp_in, self.attrs(node).requant)]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        return {"count": t.size, "channels": t.shape[-1] if t.shape else 1, "zp_in": t.zero_point,
                "requant": self.attrs(node).requant}
