"""Helium (MVE) depthwise convolution for the Cortex-M55, int8 weights read straight from flash
(templates/cortexm/ops_mve/dw.c.j2, docs/kernels.md).

Lanes are output pixels, not channels: for one channel at a time, four output pixels along one
axis (the longer of the output's rows and columns) are gathered by one ``VLDRB.S32`` with
offsets (a tap of four pixels: the input bytes at a stride of ``stride x channels``) and
multiplied by the tap's weight, a scalar, with one ``VMLA.S32``: 2 instructions per 4 MACs. The
per-channel requantization is vectorised over the same four pixels with scalar constants, and
the outputs are scattered back by one ``VSTRB.32``.

Why the integers are the reference's:

* taps outside the input are skipped, as in the reference: kernel rows along the outer axis by
  the loop bounds (the same for all four lanes), kernel taps along the lane axis by a predicate
  on the lanes that would read outside (zeroed by the gather, then ``x - zp`` on the valid
  lanes only). Blocks whose four lanes are inside for every tap start from
  ``bias - zp * sum(w over the taps read)`` and add ``x * w``, which is the same sum;
* TFLite's double rounding: ``VQRDMULH`` is gemmlowp's SaturatingRoundingDoublingHighMul bit for
  bit (``(a*b + 2^30) >> 31``, INT32_MIN * INT32_MIN saturating), and RoundingDivideByPOT by
  e > 0 (ties away from zero) is ``VRSHL`` by -e (ties up, computed without overflow) of
  ``y + (y >> 31)``; the result cannot be INT32_MIN when M < 2^31, so the add does not wrap;
  the zero point is added with saturation (``VQADD``) before the clamp, like the reference's
  int64 add;
* wrapping int32 adds in any order end at the accumulator the contract's static check bounds.

In place (the planner's depthwise rows): output line r overwrites input line r of its channel,
which the outputs of lines up to r + pad still read, so each output line waits in a ring of
pad + 1 lines of that channel.
"""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import in_place, valid_taps

LANES = 4  # int32 lanes of a Helium vector


def lane_axis(g: dict) -> str:
    """"x" (lanes along an output row) or "y" (along a column): the longer output extent, so that
    fewer blocks have lanes past the end or taps in the padding."""
    return "y" if g["oh"] > g["ow"] else "x"


def axes(g: dict) -> dict:
    """The layer's geometry as an outer axis R and a lane axis L (extents, kernel, stride, dilation,
    padding, byte steps in the input and output)."""
    c = g["ic"]
    y = {"n": g["oh"], "i": g["ih"], "k": g["kh"], "s": g["sh"], "d": g["dh"], "p": g["pad_t"],
         "step_in": g["iw"] * c, "step_out": g["ow"] * c}
    x = {"n": g["ow"], "i": g["iw"], "k": g["kw"], "s": g["sw"], "d": g["dw"], "p": g["pad_l"],
         "step_in": c, "step_out": c}
    r, lane = (x, y) if lane_axis(g) == "y" else (y, x)
    return {"R": r, "L": lane}


def runs(a: dict) -> list[tuple[int, int, int, int]]:
    """(first line, end line, first kernel tap, end kernel tap) along the outer axis: the lines
    that read the same kernel taps (the ones inside the input), in order."""
    out: list[list[int]] = []
    for r in range(a["n"]):
        k = [kk for kk in range(a["k"]) if 0 <= r * a["s"] - a["p"] + kk * a["d"] < a["i"]]
        k0, k1 = (k[0], k[-1] + 1) if k else (0, 0)
        if out and out[-1][2:] == [k0, k1]:
            out[-1][1] = r + 1
        else:
            out.append([r, r + 1, k0, k1])
    return [tuple(x) for x in out]


def interior_blocks(a: dict) -> tuple[int, int]:
    """[first, end) of the blocks of four lanes that are whole and read inside the input for every
    kernel tap along the lane axis (they need no predicate); empty when there is none."""
    ok = [b for b in range(a["n"] // LANES)
          if (LANES * b) * a["s"] - a["p"] >= 0 and (LANES * b + LANES - 1) * a["s"] - a["p"] + (a["k"] - 1) * a["d"] < a["i"]]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


class MveDepthwise(KernelVariant):
    name = "mve_dw"
    ops = ("conv2d",)
    features = frozenset({"dsp", "mve"})
    priority = 42  # above the DSP depthwise kernels (and their int16 records) on a Helium core
    template = "ops_mve/dw.c.j2"
    cost_kinds = {"mve_dw": ("taps_full", "taps_edge", "blocks_full", "blocks_edge", "lines", "channels", "const")}
    cost_reduced = {"mve_dw": ("taps_full", "taps_edge", "blocks_full")}
    cost_work = {"mve_dw": (("taps_full", LANES), ("blocks_full", LANES))}

    def claims(self, node) -> bool:
        return node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
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
        n = oc
        mult = list(rq.multiplier) * (n if len(rq.multiplier) == 1 else 1)
        shift = list(rq.shift) * (n if len(rq.shift) == 1 else 1)
        left = [rq.left_shift + max(31 - s, 0) for s in shift]
        right = [max(s - 31, 0) for s in shift]
        ax = axes(g)
        inplace = plan is not None and in_place(plan, node.inputs[0], node.outputs[0])
        ctx = {"g": g, "R": ax["R"], "L": ax["L"], "lane_axis": lane_axis(g), "runs": runs(ax["R"]),
               "inner": interior_blocks(ax["L"]), "nblocks": -(-ax["L"]["n"] // LANES),
               "w_bytes": per_channel.reshape(-1).tolist(), "mult": mult, "lr": [lv * 256 + rv for lv, rv in
                                                                                zip(left, right)],
               "any_left": any(left), "uses_bias": True, "inplace": inplace,
               "zp_y": rq.zero_point, "lo": rq.lo, "hi": rq.hi,
               "summary": f"4 pixels along {lane_axis(g)} per VLDRB gather, VMLA by the tap's int8 weight, "
                          f"vectorised requantization"}
        if inplace:
            ctx["ring_lines"] = ax["R"]["p"] + 1
            ctx["scratch_bytes"] = ctx["ring_lines"] * ctx["nblocks"] * LANES
            ctx["summary"] += f", in place with a ring of {ctx['ring_lines']} line(s) per channel"
        # int8 weights (they replace the layer's), the multipliers as int32 and the shifts as int16
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=w.size + 4 * n + 2 * n)

    def flash_bytes(self, sel: Selection, node, graph) -> int:
        # the int8 weights replace the reference copy (compiled out); the requantization tables are extra
        # only beyond the reference's per-channel ones, which the Helium build compiles out too
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Taps executed in blocks of four whole lanes and in edge blocks (predicated), blocks, lines."""
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, kw = info["kernel"]
        sh, sw = info["stride"]
        dh, dw = info.get("dilation", (1, 1))
        g = {"ih": ih, "iw": iw, "ic": ic, "oh": oh, "ow": ow, "oc": oc, "kh": kh, "kw": kw, "sh": sh, "sw": sw,
             "dh": dh, "dw": dw, "pad_t": info["pad"][0], "pad_l": info["pad"][1]}
        ax = axes(g)
        r, lane = ax["R"], ax["L"]
        taps_r = valid_taps(r["n"], r["i"], r["k"], r["s"], r["p"], r["d"])
        b0, b1 = interior_blocks(lane)
        full = b1 - b0
        edge = -(-lane["n"] // LANES) - full
        return "mve_dw", {"taps_full": oc * taps_r * full * lane["k"], "taps_edge": oc * taps_r * edge * lane["k"],
                          "blocks_full": oc * r["n"] * full, "blocks_edge": oc * r["n"] * edge,
                          "lines": oc * r["n"], "channels": oc, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (MveDepthwise(),)
