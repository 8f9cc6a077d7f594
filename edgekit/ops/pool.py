"""Max and average pooling over channels-last maps."""
from __future__ import annotations

import numpy as np

from ..ir.contract import apply_requant, div_round
from ._windows import pad_hw, window_slices
from ..ir.operators import Op, register


def _pool_context(node, graph) -> dict:
    x = graph.tensors[node.inputs[0]]
    y = graph.tensors[node.outputs[0]]
    a = node.attrs
    return {"ih": x.shape[0], "iw": x.shape[1], "c": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
            "kh": a["kernel"][0], "kw": a["kernel"][1], "sh": a["stride"][0], "sw": a["stride"][1],
            "pad_t": a["pad"][0], "pad_l": a["pad"][1], "zp": 0 if a.get("raw_sum") else x.zero_point}


def _valid_taps(a, in_hw, out_hw) -> np.ndarray:
    """(oh, ow, 1) count of window taps inside the input at each output position."""
    (kh, kw), (sh, sw), (ih, iw), (oh, ow) = a["kernel"], a["stride"], in_hw, out_hw
    ys = np.arange(oh)[:, None] * sh - a["pad"][0] + np.arange(kh)[None, :]
    xs = np.arange(ow)[:, None] * sw - a["pad"][1] + np.arange(kw)[None, :]
    ny = ((ys >= 0) & (ys < ih)).sum(axis=1)
    nx = ((xs >= 0) & (xs < iw)).sum(axis=1)
    return (ny[:, None] * nx[None, :])[..., None]


@register
class MaxPool(Op):
    name = "maxpool"
    template = "maxpool.c.j2"

    def simulate(self, node, inputs, graph):
        a = node.attrs
        oh, ow, _ = graph.tensors[node.outputs[0]].shape
        xp = pad_hw(inputs[0], a["pad"], np.iinfo(np.int64).min)  # padding never wins
        views = [v for _, v in window_slices(xp, a["kernel"], a["stride"], (1, 1), (oh, ow))]
        y = np.max(np.stack(views), axis=0)
        if a.get("lo") is not None:  # fused activation (TFLite): clamp
            y = np.clip(y, a["lo"], a["hi"])
        return [y]

    def c_context(self, node, graph):
        a = node.attrs
        return dict(_pool_context(node, graph), lo=a.get("lo"), hi=a.get("hi"))


@register
class AvgPool(Op):
    """Sum of (x - zp) over the window, then ``div_round(sum * num, den) + zp`` or a Q31 requant.

    TFLite's average pool sets ``raw_sum`` (sum the codes themselves, no zero point),
    ``count_include_pad=False`` (divide by the taps inside the input, with num = 1 and
    den = the window) and ``mode="AWAY"`` (round half away from zero).
    """

    name = "avgpool"
    template = "avgpool.c.j2"

    def simulate(self, node, inputs, graph):
        a = node.attrs
        zp = 0 if a.get("raw_sum") else graph.tensors[node.inputs[0]].zero_point
        oh, ow, _ = graph.tensors[node.outputs[0]].shape
        xp = pad_hw(inputs[0].astype(np.int64) - zp, a["pad"], 0)
        total = sum(v for _, v in window_slices(xp, a["kernel"], a["stride"], (1, 1), (oh, ow)))
        if a["requant"] is not None:
            return [apply_requant(total, a["requant"])]
        den = a["den"]
        if not a.get("count_include_pad", True):
            den = _valid_taps(a, inputs[0].shape[1:3], (oh, ow))
        q = div_round(total * a["num"], den, a["mode"]) + a["zero_point"]
        return [np.clip(q, a["lo"], a["hi"])]

    def c_context(self, node, graph):
        a = node.attrs
        return dict(_pool_context(node, graph), num=a["num"], den=a["den"], mode=a["mode"], requant=a["requant"],
                    out_zp=a["zero_point"], lo=a["lo"], hi=a["hi"],
                    count_valid=not a.get("count_include_pad", True))
