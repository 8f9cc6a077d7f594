"""Max and average pooling over channels-last maps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant, apply_requant, div_round
from ..ir.operators import HlsLayer, Op, register
from ._windows import padded, taps


@dataclass
class MaxPoolAttrs:
    kernel: list[int]  # [kh, kw]
    stride: list[int]
    pad: list[int]  # [top, left, bottom, right]; padding never wins
    lo: int | None = None  # a fused activation's clamp (TFLite)
    hi: int | None = None


@dataclass
class AvgPoolAttrs:
    kernel: list[int]
    stride: list[int]
    pad: list[int]
    num: int  # sum * num / den, rounded per mode ...
    den: int
    mode: str  # "ROUND" (half to even), "FLOOR" or "AWAY" (contract.div_round)
    requant: Requant | None  # ... or this Q31 requantization of the sum instead
    zero_point: int
    lo: int
    hi: int
    raw_sum: bool = False  # sum the codes themselves (TFLite), not code - zero point
    count_include_pad: bool = True  # False: den = the taps inside the input at each position


def _pool_context(node, graph, a) -> dict:
    x = graph.tensors[node.inputs[0]]
    y = graph.tensors[node.outputs[0]]
    return {"ih": x.shape[0], "iw": x.shape[1], "c": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
            "kh": a.kernel[0], "kw": a.kernel[1], "sh": a.stride[0], "sw": a.stride[1],
            "pad_t": a.pad[0], "pad_l": a.pad[1], "zp": 0 if getattr(a, "raw_sum", False) else x.zero_point}


def _valid_taps(a, in_hw, out_hw) -> np.ndarray:
    """(oh, ow, 1) count of window taps inside the input at each output position."""
    (kh, kw), (sh, sw), (ih, iw), (oh, ow) = a.kernel, a.stride, in_hw, out_hw
    ys = np.arange(oh)[:, None] * sh - a.pad[0] + np.arange(kh)[None, :]
    xs = np.arange(ow)[:, None] * sw - a.pad[1] + np.arange(kw)[None, :]
    ny = ((ys >= 0) & (ys < ih)).sum(axis=1)
    nx = ((xs >= 0) & (xs < iw)).sum(axis=1)
    return (ny[:, None] * nx[None, :])[..., None]


@register
class MaxPool(Op):
    name = "maxpool"
    attributes = MaxPoolAttrs
    template = "maxpool.c.j2"
    # max pooling is exact on codes (hls4ml's average pooling is refused before conversion)
    hls_layers = tuple(HlsLayer(c, "pass-through") for c in ("Pooling1D", "Pooling2D", "GlobalPooling1D",
                                                              "GlobalPooling2D"))

    float32_inputs = True  # a maximum of exact integer codes is one of them

    def simulate(self, node, inputs, graph):
        a = self.attrs(node)
        oh, ow, _ = graph.tensors[node.outputs[0]].shape
        x = inputs[0] if inputs[0].dtype == np.float32 else np.asarray(inputs[0], np.int64)
        if any(a.pad):
            lowest = -np.inf if x.dtype == np.float32 else np.iinfo(np.int64).min  # padding never wins
            x = padded(x, a.pad, 0, x.dtype, fill=lowest)
        slices = taps(x, a.kernel, a.stride, (oh, ow))
        y = next(slices).copy()
        for tap in slices:
            np.maximum(y, tap, out=y)
        if a.lo is not None:  # fused activation (TFLite): clamp
            np.clip(y, a.lo, a.hi, out=y)
        return [y]

    def c_context(self, node, graph):
        a = self.attrs(node)
        return dict(_pool_context(node, graph, a), lo=a.lo, hi=a.hi)


@register
class AvgPool(Op):
    """Sum of (x - zp) over the window, then ``div_round(sum * num, den) + zp`` or a Q31 requant.

    TFLite's average pool sets ``raw_sum`` (sum the codes themselves, no zero point),
    ``count_include_pad=False`` (divide by the taps inside the input, with num = 1 and
    den = the window) and ``mode="AWAY"`` (round half away from zero).
    """

    name = "avgpool"
    attributes = AvgPoolAttrs
    template = "avgpool.c.j2"

    float32_inputs = True  # summed in int64 (global pooling converts as it sums: no int64 copy of the map)

    def simulate(self, node, inputs, graph):
        a = self.attrs(node)
        zp = 0 if a.raw_sum else graph.tensors[node.inputs[0]].zero_point
        oh, ow, _ = graph.tensors[node.outputs[0]].shape
        x = inputs[0]
        n, ih, iw, c = x.shape
        if (oh, ow) == (1, 1) and not any(a.pad) and tuple(a.kernel) == (ih, iw):
            # global pooling: one reduction over the map, every tap inside it
            total = x.reshape(n, 1, ih * iw, c).sum(axis=2, keepdims=True, dtype=np.int64)
            if zp:
                total -= zp * ih * iw
        else:
            x = padded(x, a.pad, zp, np.int64) if any(a.pad) or zp else np.asarray(x, np.int64)
            slices = taps(x, a.kernel, a.stride, (oh, ow))
            total = next(slices).copy()
            for tap in slices:
                total += tap
        if a.requant is not None:
            return [apply_requant(total, a.requant)]
        den = a.den
        if not a.count_include_pad:
            den = _valid_taps(a, inputs[0].shape[1:3], (oh, ow))
        q = div_round(total * a.num, den, a.mode) + a.zero_point
        return [np.clip(q, a.lo, a.hi)]

    def c_context(self, node, graph):
        a = self.attrs(node)
        return dict(_pool_context(node, graph, a), num=a.num, den=a.den, mode=a.mode, requant=a.requant,
                    out_zp=a.zero_point, lo=a.lo, hi=a.hi, count_valid=not a.count_include_pad)
