"""2D convolution over channels-last maps (1D convolutions use H = 1), regular or depthwise.

``acc = bias + sum over taps inside the input of (x - zp) * w``: taps in the padding
contribute nothing, exactly as padding with real zeros does.
"""
from __future__ import annotations

import numpy as np

from ..ir.contract import apply_requant
from ._windows import pad_hw, window_slices
from .registry import Op, register


@register
class Conv2d(Op):
    name = "conv2d"
    template = "conv2d.c.j2"

    def simulate(self, node, inputs, graph):
        x, w, b = inputs[:3]
        a = node.attrs
        zp = graph.tensors[node.inputs[0]].zero_point
        oh, ow, oc = graph.tensors[node.outputs[0]].shape
        # float64 holds every partial sum exactly (|sum| < 2^31 by the static check) and uses BLAS.
        xp = pad_hw(x.astype(np.float64) - zp, a["pad"], 0)
        acc = np.zeros((x.shape[0], oh, ow, oc))
        wf = w.astype(np.float64)
        for (ky, kx), view in window_slices(xp, a["kernel"], a["stride"], a["dilation"], (oh, ow)):
            if a["depthwise"]:
                acc += np.repeat(view, a["depth_multiplier"], axis=-1) * wf[ky, kx]
            else:
                acc += view @ wf[:, ky, kx, :].T
        acc = acc.astype(np.int64) + b.astype(np.int64)
        rq = a.get("requant")
        y = apply_requant(acc, rq) if rq is not None else acc
        if a.get("residual"):  # fused residual add (ir/passes.py): same arithmetic as ops/add.py
            res = a["residual"]
            zp_y = rq.zero_point
            zp_r = graph.tensors[node.inputs[3]].zero_point
            ry, rr = res["in_requant"]
            y = apply_requant(y - zp_y, ry) + apply_requant(inputs[3] - zp_r, rr)
            if res["requant"] is not None:
                y = apply_requant(y, res["requant"])
        return [y]

    def inplace_inputs(self, node, graph):
        # The residual is read at output element i just before that element is written.
        return [node.inputs[3]] if node.attrs.get("residual") else []

    def c_context(self, node, graph):
        x = graph.tensors[node.inputs[0]]
        y = graph.tensors[node.outputs[0]]
        a = node.attrs
        return {"ih": x.shape[0], "iw": x.shape[1], "ic": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
                "oc": y.shape[2], "kh": a["kernel"][0], "kw": a["kernel"][1], "sh": a["stride"][0],
                "sw": a["stride"][1], "dh": a["dilation"][0], "dw": a["dilation"][1], "pad_t": a["pad"][0],
                "pad_l": a["pad"][1], "depthwise": a["depthwise"], "mult": a["depth_multiplier"],
                "zp": x.zero_point, "requant": a.get("requant"), "residual": a.get("residual"),
                "zp_y": a["requant"].zero_point if a.get("requant") else 0,
                "zp_r": graph.tensors[node.inputs[3]].zero_point if a.get("residual") else 0}

    def macs(self, node, graph):
        y = graph.tensors[node.outputs[0]]
        kh, kw = node.attrs["kernel"]
        cin = 1 if node.attrs["depthwise"] else graph.tensors[node.inputs[0]].shape[2]
        return y.size * kh * kw * cin
