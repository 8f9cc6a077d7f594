"""Vectorised execution of the integer IR.

Every kernel works on int64 numpy arrays holding integer codes, one batch at a time;
results are checked against each tensor's declared range so a kernel that leaves its
type is caught here, not on the chip.
"""
from __future__ import annotations

import numpy as np

from ..ir.contract import quantize, quantize_tflite
from ..ir.graph import Graph, apply_pre_ops
from ..ir.operators import get_op


def quantize_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float samples in the model's input layout -> input codes (the host-side input quantizer)."""
    iq = graph.input_quant
    x = apply_pre_ops(iq, x)
    quant = quantize_tflite if iq.rounding == "tflite" else quantize
    q = quant(x, iq.scale, iq.zero_point, iq.qmin, iq.qmax)
    t = graph.tensors[graph.inputs[0]]
    return q.reshape((q.shape[0],) + tuple(t.shape))


def simulate(graph: Graph, codes: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run a batch of input codes; returns the output tensors (all tensors with keep_all)."""
    values: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(codes, dtype=np.int64)}
    for name, arr in graph.constants.items():
        values[name] = arr
    remaining = {t: sum(t in n.inputs for n in graph.nodes) for t in graph.tensors}
    for node in graph.nodes:
        op = get_op(node.op, node.name)
        outs = op.simulate(node, [values[i] for i in node.inputs], graph)
        for name, arr in zip(node.outputs, outs):
            t = graph.tensors[name]
            arr = np.asarray(arr, dtype=np.int64)
            if arr.size and (arr.min() < t.qmin or arr.max() > t.qmax):
                raise AssertionError(f"simulator: node '{node.name}' produced values outside {t.dtype} "
                                     f"[{t.qmin}, {t.qmax}] for tensor '{name}' (edgekit bug)")
            values[name] = arr.reshape((arr.shape[0],) + tuple(t.shape))
        if not keep_all:
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in graph.outputs and i not in graph.constants:
                    del values[i]
    if keep_all:
        return values
    return {o: values[o] for o in graph.outputs}
