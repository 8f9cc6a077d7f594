"""Requantize an integer tensor to another scale and zero point (per-tensor)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant, apply_requant
from ..ir.operators import HlsLayer, Op, register
from ._gemm import codes_minus, float_requant, float_requant_exact


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
    float32_inputs = True
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        t = graph.tensors[node.inputs[0]]
        rq = self.attrs(node).requant
        x_abs = max(abs(t.qmin - t.zero_point), abs(t.qmax - t.zero_point))
        if float_requant_exact(rq, x_abs):  # shifts and small multipliers: float32 holds every step
            return [float_requant(codes_minus(inputs[0], t.zero_point, np.float32), rq, x_abs)]
        return [apply_requant(inputs[0].astype(np.int64) - t.zero_point, rq)]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        return {"count": t.size, "channels": t.shape[-1] if t.shape else 1, "zp_in": t.zero_point,
                "requant": self.attrs(node).requant}
