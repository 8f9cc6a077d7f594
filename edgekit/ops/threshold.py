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
# Up to this many thresholds per channel, a count is that many elementwise comparisons, summed
# (a 3-bit activation's 7: about 30x faster than the binary search); beyond, the table or search.
COMPARE_LIMIT = 32
FLOAT32_EXACT_BELOW = 1 << 24  # every integer of magnitude <= 2^24 is a float32


def counts_by_table(x: np.ndarray, thresholds: np.ndarray, x_lo: int, x_hi: int) -> np.ndarray:
    """:func:`thresholds_passed` for inputs in [x_lo, x_hi], through a table of every value's count."""
    channels = thresholds.shape[0]
    values = np.arange(x_lo, x_hi + 1, dtype=np.int64)
    table = thresholds_passed(np.repeat(values[:, None], channels, axis=1), thresholds)  # (values, channels)
    if channels == 1:
        return table[:, 0][x - x_lo]
    return table.ravel()[(x - x_lo) * channels + np.arange(channels, dtype=np.int64)]


def float32_at_or_above(thresholds: np.ndarray) -> np.ndarray:
    """The smallest float32 at or above each integer threshold: for any float32 ``x``,
    ``x >= T`` exactly when ``x >= float32_at_or_above(T)`` (x is a float32 at or above T, so
    at or above the smallest one; and that one is at or above T), whatever T's magnitude."""
    t = np.asarray(thresholds, np.int64)
    f = t.astype(np.float32)  # to nearest: may land below T when T needs more than 24 bits
    below = f.astype(np.float64) < t  # float64 holds every int32 threshold and every float32 exactly
    f[below] = np.nextafter(f[below], np.float32(np.inf))
    return f


def counts_by_comparison(x: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``#{j : x[..., c] >= columns[j, c]}`` as uint8, one comparison pass per threshold ``j``
    (``columns`` [count, channels or 1], in ``x``'s dtype: int64, or float32 as
    :func:`float32_at_or_above` gives them for float32 ``x``)."""
    passed = np.zeros(x.shape, np.uint8)
    mask = np.empty(x.shape, bool)
    for column in columns:
        np.greater_equal(x, column, out=mask)
        passed += mask.view(np.uint8)
    return passed


@dataclass(frozen=True)
class ThresholdPlan:
    """How a threshold node counts, decided once per graph (``Op.prepare_node``)."""

    method: str  # "compare", "table" or "search"
    thresholds: np.ndarray  # [channels or 1, count] int64
    int64_columns: np.ndarray | None = None  # "compare": [count, channels] for int64 inputs
    float32_columns: np.ndarray | None = None  # "compare": the same rounded up, for float32 inputs
    float32_input_exact: bool = False  # int64 inputs fit float32 exactly (declared range within 2^24)


def plan_thresholds(thresholds: np.ndarray, x_lo: int, x_hi: int) -> ThresholdPlan:
    t = np.asarray(thresholds, np.int64)
    channels, count = t.shape
    if count <= COMPARE_LIMIT:
        columns = np.ascontiguousarray(t.T)
        # rounding up is decided in float64, exact for thresholds below 2^53 (int32 ones are)
        small = not t.size or int(np.abs(t).max()) < 1 << 53
        return ThresholdPlan("compare", t, columns, float32_at_or_above(columns) if small else None,
                             small and max(abs(x_lo), abs(x_hi)) <= FLOAT32_EXACT_BELOW)
    if (x_hi - x_lo + 1) * channels <= TABLE_LIMIT:
        return ThresholdPlan("table", t)
    return ThresholdPlan("search", t)


@register
class Threshold(Op):
    name = "threshold"
    attributes = ThresholdAttrs
    template = "threshold.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)
    float32_inputs = True  # exact integer codes compare exactly with thresholds rounded up to float32

    def prepare_node(self, node, graph) -> ThresholdPlan:
        xt = graph.tensors[node.inputs[0]]
        return plan_thresholds(graph.constants[node.inputs[1]], xt.qmin, xt.qmax)

    def simulate(self, node, inputs, graph, plan: ThresholdPlan | None = None):
        x = inputs[0]
        xt = graph.tensors[node.inputs[0]]
        if plan is None:
            plan = plan_thresholds(inputs[1], xt.qmin, xt.qmax)
        a = self.attrs(node)
        if plan.method == "compare":
            if x.dtype != np.float32 and plan.float32_input_exact:
                x = x.astype(np.float32)  # exact: the declared range is within 2^24
            if x.dtype == np.float32 and plan.float32_columns is not None:
                passed = counts_by_comparison(x, plan.float32_columns)
            else:
                passed = counts_by_comparison(np.asarray(x, np.int64), plan.int64_columns)
            # the codes as float32 (exact small integers), which the next layer takes as they are
            y = passed.astype(np.float32)
            if a.step != 1:
                y *= a.step
            if a.out_min:
                y += a.out_min
            return [y]
        x = np.asarray(x, np.int64)
        if plan.method == "table":
            passed = counts_by_table(x, plan.thresholds, xt.qmin, xt.qmax)
        else:
            passed = thresholds_passed(x, plan.thresholds)
        return [a.out_min + a.step * passed]

    def c_context(self, node, graph):
        t = graph.tensors[node.inputs[0]]
        channels, count = graph.constants[node.inputs[1]].shape
        return {"count": t.size, "channels": channels, "thresholds": count, "out_min": self.attrs(node).out_min,
                "step": self.attrs(node).step}
