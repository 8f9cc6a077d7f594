"""Helium (MVE) depthwise convolution for the Cortex-M55, int8 weights read straight from flash
(templates/cortexm/ops_mve/dw.c.j2, docs/kernels.md).

One channel at a time. The input lines the kernel reads (rows, or columns when that needs fewer
vectors) sit in a ring of S = (kernel lines - 1) x dilation + 1 lines, *interleaved*: position p
of ring slot s is byte ``p * S + s`` (copied 8 bytes per ``VLDRB`` gather and ``VSTRB`` scatter;
the padding holds the input zero point). Then the kernel window of one output is the bytes
``j * stride * S .. + ((kw - 1) * dilation + 1) * S`` in a row: one ``VLDRB.S8`` of 16 bytes and
one ``VMLADAV.S8`` against the channel's weights placed in the same lanes (zero elsewhere; a
gather from the channel's int8 weights, once per line, as the slots rotate) give the output's
sum of 9 (or 16) products in 2 instructions. Four such sums go into one vector for the
per-channel requantization, vectorised over the four outputs with scalar constants, and one
``VSTRB.32`` scatter stores them.

Why the integers are the reference's:

* every tap, padding included, is read: the padding holds the zero point and the sum starts at
  ``bias - zp * sum(w)``, so a padding tap adds ``zp * w - zp * w = 0`` and an inside tap
  ``(x - zp) * w``, the reference's sum; uint8 codes are stored flipped to int8
  (``x ^ 0x80 = x - 128``) with the zero point shifted the same way; lanes outside the window
  have weight 0; wrapping int32 adds in any order end at the accumulator the contract's static
  check bounds;
* TFLite's double rounding: ``VQRDMULH`` is gemmlowp's SaturatingRoundingDoublingHighMul bit for
  bit (``(a*b + 2^30) >> 31``, INT32_MIN * INT32_MIN saturating), and RoundingDivideByPOT by
  e > 0 (ties away from zero) is ``VRSHL`` by -e (ties up, computed without overflow) of
  ``y + (y >> 31)``, which cannot wrap since y > INT32_MIN when M < 2^31; the left shift of a
  multiplier above 1 wraps like the reference's; the zero point is added with saturation
  (``VQADD``) before the clamp, like the reference's int64 add.

In place (the planner's depthwise rows) needs nothing more: an input line is copied into the
ring before the output line at the same place is written, and the lines read later are not
written yet.
"""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import in_place

LANES = 4    # outputs per requantization vector (int32 lanes)
BYTES = 16   # int8 lanes of a VMLADAV


def axes(g: dict) -> dict:
    """The layer as an outer axis R (lines) and an axis L along the lines (four outputs per
    requantization vector): extents, kernel, stride, dilation, padding, byte steps in the input
    and output. L runs along the axis that needs fewer vectors (lines x ceil(length / 4)), rows on
    a tie."""
    c = g["ic"]
    y = {"n": g["oh"], "i": g["ih"], "k": g["kh"], "s": g["sh"], "d": g["dh"], "p": g["pad_t"],
         "step_in": g["iw"] * c, "step_out": g["ow"] * c, "name": "y"}
    x = {"n": g["ow"], "i": g["iw"], "k": g["kw"], "s": g["sw"], "d": g["dw"], "p": g["pad_l"],
         "step_in": c, "step_out": c, "name": "x"}
    along_y = g["ow"] * -(-g["oh"] // LANES) < g["oh"] * -(-g["ow"] // LANES)
    r, lane = (x, y) if along_y else (y, x)
    return {"R": r, "L": lane}


def ring_layout(r: dict, lane: dict, kw: int, lanes_along_x: bool) -> dict:
    """The interleaved ring: S slots, the window's span T in bytes and its VMLADAV vectors, the
    buffer's bytes, the positions copied per line, and per slot rotation the weight lanes (as
    offsets into the channel's kh * kw weights and a lane mask per vector)."""
    S = (r["k"] - 1) * r["d"] + 1
    T = ((lane["k"] - 1) * lane["d"] + 1) * S
    nvec = -(-T // BYTES)
    blocks = -(-lane["n"] // LANES)
    last = (LANES * blocks - 1) * lane["s"] * S                # first byte of the last window computed
    buf = -(-(last + nvec * BYTES) // BYTES) * BYTES
    positions = buf // S                                       # whole positions in the buffer
    copy = max(0, min(lane["i"], positions - lane["p"]))        # input positions that land in the buffer
    offsets, masks = [], []
    for rot in range(S):
        lanes = [0] * (nvec * BYTES)
        mask = [0] * (nvec * BYTES)
        for kr in range(r["k"]):
            for kl in range(lane["k"]):
                at = kl * lane["d"] * S + (rot + kr * r["d"]) % S
                lanes[at] = kl * kw + kr if not lanes_along_x else kr * kw + kl
                mask[at] = 1
        for v in range(nvec):
            offsets += lanes[v * BYTES:(v + 1) * BYTES]
            masks.append(sum(1 << b for b in range(BYTES) if mask[v * BYTES + b]))
    return {"S": S, "T": T, "nvec": nvec, "blocks": blocks, "buf": buf, "copy_n": copy,
            "w_offsets": offsets, "w_masks": masks}


def info_geometry(info: dict) -> dict:
    """The layer geometry the Helium depthwise layouts take, from a cost model's layer ``info``."""
    ih, iw, ic = info["in"]
    oh, ow, oc = info["out"]
    kh, kw = info["kernel"]
    sh, sw = info["stride"]
    dh, dw = info.get("dilation", (1, 1))
    return {"ih": ih, "iw": iw, "ic": ic, "oh": oh, "ow": ow, "oc": oc, "kh": kh, "kw": kw, "sh": sh, "sw": sw,
            "dh": dh, "dw": dw, "pad_t": info["pad"][0], "pad_l": info["pad"][1]}


class MveDepthwise(KernelVariant):
    name = "mve_dw"
    ops = ("conv2d",)
    features = frozenset({"dsp", "mve"})
    priority = 42  # above the DSP depthwise kernels (and their int16 records) on a Helium core
    template = "ops_mve/dw.c.j2"
    row_ranges = True  # when its lines are rows (Selection.ctx["row_ranges"]): whole rows per call, a ring of rows in
    cost_kinds = {"mve_dw": ("blocks", "vmladav", "lines", "copies", "copy_vec", "fills", "channels", "const")}
    cost_reduced = {"mve_dw": ("blocks", "lines", "copy_vec")}
    cost_work = {"mve_dw": (("blocks", LANES),)}

    def claims(self, node) -> bool:
        return node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        if len(node.inputs) < 3 or node.inputs[2] not in graph.constants:
            return "no constant bias"
        a = node.attrs
        if x.dtype not in ("int8", "uint8") or y.dtype not in ("int8", "uint8"):
            return f"{x.dtype} input or {y.dtype} output (Helium depthwise: 8-bit codes)"
        if a["depth_multiplier"] != 1:
            return "depth multiplier other than 1"
        if a.get("residual"):
            return "fused residual add"
        rq = a.get("requant")
        if rq is None or rq.rounding != "double":
            return "requantization other than TFLite's double rounding"
        if any(m < 0 or m >= 2**31 for m in rq.multiplier) or rq.left_shift < 0:
            return "negative multiplier"
        w = graph.constants[node.inputs[1]]
        if w.size == 0 or int(w.min()) < -128 or int(w.max()) > 127:
            return "weights outside the int8 range"
        g = conv_geometry(node, graph)
        ax = axes(g)
        if ((ax["L"]["k"] - 1) * ax["L"]["d"] + 1) * ((ax["R"]["k"] - 1) * ax["R"]["d"] + 1) > 4 * BYTES:
            return "kernel window of more than 64 bytes in the interleaved ring"
        if plan is not None and in_place(plan, node.inputs[0], node.outputs[0]):
            px, py = plan.placements[node.inputs[0]], plan.placements[node.outputs[0]]
            if px.offset != py.offset or x.shape != y.shape or a["stride"] != [1, 1] or a["dilation"] != [1, 1]:
                return "partly in place"
        return None

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        rq = node.attrs["requant"]
        w = graph.constants[node.inputs[1]].astype(np.int64)            # (kh, kw, oc)
        kh, kw, oc = w.shape
        per_channel = w.reshape(kh * kw, oc).T                           # (oc, taps): one channel's taps together
        mult = list(rq.multiplier) * (oc if len(rq.multiplier) == 1 else 1)
        shift = list(rq.shift) * (oc if len(rq.shift) == 1 else 1)
        left = [rq.left_shift + max(31 - s, 0) for s in shift]
        right = [max(s - 31, 0) for s in shift]
        ax = axes(g)
        r, lane = ax["R"], ax["L"]
        x = graph.tensors[node.inputs[0]]
        flip = x.dtype == "uint8"
        lay = ring_layout(r, lane, kw, lane["name"] == "x")
        zp_s = x.zero_point - 128 if flip else x.zero_point
        # every tap is read, padding included (it holds zp_s): each sum starts at bias - zp_s * sum(w)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        init = bias - zp_s * w.reshape(kh * kw, oc).sum(axis=0)
        ctx = {"g": g, "R": r, "L": lane, "lay": lay, "flip": flip, "zp_s": zp_s, "init": init.tolist(),
               "w_bytes": per_channel.reshape(-1).tolist(), "mult": mult, "lr": [lv * 256 + rv for lv, rv in
                                                                                zip(left, right)],
               "any_left": any(left), "right": "all" if all(right) else "some" if any(right) else "none",
               "gather16": 7 * lane["step_in"] < 2**16 and 7 * lay["S"] < 2**16, "uses_bias": False,
               "zp_y": rq.zero_point, "lo": rq.lo, "hi": rq.hi, "scratch_bytes": lay["buf"],
               "row_ranges": r["name"] == "y",
               "summary": f"lines along {lane['name']} interleaved in a ring of {lay['S']}, one VMLADAV.S8 per "
                          f"output ({lay['nvec']} vector(s) of 16 lanes), int8 weights, vectorised requantization"}
        # int8 weights and the sums' int32 starts (they replace the layer's weights and bias), the
        # multipliers as int32 and the shifts as int16, the lane tables of the ring's rotations
        return Selection(self.name, self.template, ctx=ctx,
                         weight_bytes=w.size + 10 * oc + len(lay["w_offsets"]) + 2 * len(lay["w_masks"]))

    def flash_bytes(self, sel: Selection, node, graph) -> int:
        # the weights and the bias replace the reference copies (compiled out); the requantization tables are extra
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes
                   - graph.constants[node.inputs[2]].nbytes)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Blocks of four outputs and their taps, lines, and the copies into the ring (lines, vectors)."""
        g = info_geometry(info)
        kw, oc = g["kw"], g["oc"]
        ax = axes(g)
        r, lane = ax["R"], ax["L"]
        lay = ring_layout(r, lane, kw, lane["name"] == "x")
        loaded = len({q for o in range(r["n"]) for q in range(o * r["s"] - r["p"],
                                                             o * r["s"] - r["p"] + (r["k"] - 1) * r["d"] + 1)})
        blocks = oc * r["n"] * lay["blocks"]
        return "mve_dw", {"blocks": blocks, "vmladav": blocks * LANES * lay["nvec"], "lines": oc * r["n"],
                          "copies": oc * loaded, "copy_vec": oc * loaded * -(-lay["copy_n"] // 8),
                          "fills": oc * lay["buf"] // BYTES, "channels": oc, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (MveDepthwise(),)
