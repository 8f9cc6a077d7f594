"""Nearest-neighbour resize of a channels-last map: every output pixel is a copy of one input pixel.

Front ends compute, once at build time, which input row and column each output row and
column reads (attributes ``rows`` and ``cols``: ONNX's coordinate transformation and
nearest-mode rounding, or TFLite's, per axis). The kernel only copies codes, so it is exact
under any quantization: input and output share one grid. ``scale`` holds the integer factors
(output size = input size x factor), for reports and the C kernel's comment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.operators import Op, register


@dataclass
class ResizeAttrs:
    rows: list[int]   # output row y reads input row rows[y] (1D maps: [0])
    cols: list[int]   # output column x reads input column cols[x]
    scale: list[int]  # [factor along H, factor along W]
    method: str       # how the tables were derived, e.g. "ONNX asymmetric, floor" (C comment, report)


def is_repeat(table: list[int], factor: int) -> bool:
    """Whether ``table[o] == o // factor``: plain repetition, computed in C without a table."""
    return list(table) == [o // factor for o in range(len(table))]


@register
class Resize(Op):
    name = "resize"
    attributes = ResizeAttrs
    template = "resize.c.j2"

    def simulate(self, node, inputs, graph):
        a = self.attrs(node)
        x = inputs[0]  # (batch, H, W, C)
        return [x[:, np.asarray(a.rows, np.intp)][:, :, np.asarray(a.cols, np.intp)]]

    def c_context(self, node, graph):
        a = self.attrs(node)
        x = graph.tensors[node.inputs[0]]
        y = graph.tensors[node.outputs[0]]
        axes = {}
        for axis, table, factor in (("row", a.rows, a.scale[0]), ("col", a.cols, a.scale[1])):
            repeat = is_repeat(table, factor)
            axes[axis] = {"table": None if repeat else list(table), "factor": factor,
                          "index_t": "uint16_t" if max(table) < 1 << 16 else "uint32_t"}
        return {"ih": x.shape[0], "iw": x.shape[1], "c": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
                "row": axes["row"], "col": axes["col"], "method": a.method}
