"""Dense (fully connected): ``y = requant(x @ W.T + b')`` with int32 accumulation.

The input zero point is folded into the bias at lowering time (``b' = b - zp * sum(W)``),
so the kernel multiplies raw codes. Without a fused requant the output is the int32
accumulator itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant
from ..ir.operators import HlsLayer, Op, register
from ._gemm import GemmWeights, exact_matmul, gemm_weights, requantized


@dataclass
class DenseAttrs:
    requant: Requant | None = None  # the accumulator onto the output grid (None: int32 out)


def _hls_geometry(layer) -> tuple[int, int, int]:
    return int(layer.get_attr("n_in")), int(layer.get_attr("n_out")), 1


@register
class Dense(Op):
    name = "dense"
    attributes = DenseAttrs
    template = "dense.c.j2"
    accumulates = True
    packs_weights = True
    float32_inputs = True
    hls_layers = (HlsLayer("Dense", "compute", _hls_geometry),)

    def prepare_node(self, node, graph) -> GemmWeights:
        xt = graph.tensors[node.inputs[0]]
        # raw codes: the zero point is in the bias
        return gemm_weights(graph.constants[node.inputs[1]], graph.constants[node.inputs[2]], xt.qmin, xt.qmax)

    def simulate(self, node, inputs, graph, prepared: GemmWeights | None = None):
        x, w, b = inputs
        if prepared is None:
            xt = graph.tensors[node.inputs[0]]
            prepared = gemm_weights(w, b, xt.qmin, xt.qmax)
        plan = prepared.plan
        x = x.reshape(x.shape[0], -1)
        acc = exact_matmul(x if x.dtype == plan.dtype else x.astype(plan.dtype), prepared.w_t, plan)
        return [requantized(acc, b, self.attrs(node).requant, keep_float=True)]

    def c_context(self, node, graph):
        w = graph.tensors[node.inputs[1]]
        return {"n_out": w.shape[0], "n_in": w.shape[1], "requant": self.attrs(node).requant}

    def macs(self, node, graph):
        w = graph.tensors[node.inputs[1]]
        return w.shape[0] * w.shape[1]
