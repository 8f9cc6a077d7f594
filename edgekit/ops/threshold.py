"""Multi-threshold activation: ``out = out_min + step * #{j : x >= T[c, j]}`` per channel ``c``
(``step`` 2 for bipolar outputs -1/+1).

What a low-bit quantizer after a float BatchNorm (and ReLU) computes on a layer's
accumulator, as FINN streamlines it: the quantizer's output is a monotone step function of
the integer accumulator, so comparing with integer thresholds found at build time (by
running qonnx's own float32 arithmetic on the accumulator values) is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.operators import Op, register


@dataclass
class ThresholdAttrs:
    out_min: int  # the output code below every threshold
    step: int  # the output code's increase per threshold passed
    function: str  # what the thresholds stand for (the ONNX ops), for reports


def thresholds_passed(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``#{j : x[..., c] >= T[c, j]}`` for int64 ``x`` (channels last) and ``T`` (channels or 1, count).

    A count does not depend on the thresholds' order, so each channel's are sorted and the count
    is a binary search: one ``searchsorted`` for all channels, each channel's thresholds and
    inputs moved into a value range of its own (channel c at c * span), so the sorted channel
    blocks form one sorted array and channel c's search passes exactly the c * count thresholds
    of the channels before it.
    """
    ordered = np.sort(thresholds, axis=1)
    channels, count = ordered.shape
    if channels == 1 or x.size == 0:
        return np.searchsorted(ordered[0], x, side="right") if channels == 1 else np.zeros(x.shape, np.int64)
    lo = min(int(ordered.min()), int(x.min()))
    span = max(int(ordered.max()), int(x.max())) - lo + 1
    offsets = np.arange(channels, dtype=np.int64) * span
    blocks = (ordered - lo + offsets[:, None]).ravel()
    return np.searchsorted(blocks, x - lo + offsets, side="right") - np.arange(channels, dtype=np.int64) * count


# Up to this many (input value, channel) entries, the counts are tabulated once per call and
# looked up (an 8-bit input quantizer's 255 thresholds: one gather instead of a binary search).
TABLE_LIMIT = 1 << 20


def counts_by_table(x: np.ndarray, thresholds: np.ndarray, x_lo: int, x_hi: int) -> np.ndarray:
    """:func:`thresholds_passed` for inputs in [x_lo, x_hi], through a table of every value's count."""
    channels = thresholds.shape[0]
    values = np.arange(x_lo, x_hi + 1, dtype=np.int64)
    table = thresholds_passed(np.repeat(values[:, None], channels, axis=1), thresholds)  # (values, channels)
    if channels == 1:
        return table[:, 0][x - x_lo]
    return table.ravel()[(x - x_lo) * channels + np.arange(channels, dtype=np.int64)]


@register
class Threshold(Op):
    name = "threshold"
    attributes = ThresholdAttrs
    template = "threshold.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        x, thresholds = np.asarray(inputs[0], np.int64), np.asarray(inputs[1], np.int64)
        xt = graph.tensors[node.inputs[0]]
        if (xt.qmax - xt.qmin + 1) * thresholds.shape[0] <= TABLE_LIMIT:
            passed = counts_by_table(x, thresholds, xt.qmin, xt.qmax)
        else:
            passed = thresholds_passed(x, thresholds)
        a = self.attrs(node)
        return [a.out_min + a.step * passed]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        channels, count = graph.constants[node.inputs[1]].shape
        return {"count": t.size, "channels": channels, "thresholds": count, "out_min": self.attrs(node).out_min,
                "step": self.attrs(node).step}
