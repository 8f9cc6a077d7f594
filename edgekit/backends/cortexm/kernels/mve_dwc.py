"""Helium (MVE) depthwise convolution for small feature maps with many channels
(templates/cortexm/ops_mve/dwc.c.j2, docs/kernels.md).

The ring kernel (mve_dw.py) pays per channel: it fills its ring, gathers each input line of the
channel from the channels-last map (one byte every C) and re-gathers the weights at every ring
rotation. On a 6x6 map that setup is most of the layer (2.4 instructions per MAC on the VWW
model's 6x6x128 layers). This kernel moves the channels-last map into channel planes eight
channels at a time, vectorised across the channels: one ``VLDRB.S16`` loads eight channels of a
pixel and one ``VSTRB.16`` scatter per kernel row stores them into the eight planes. A plane
holds, for every output row, the kernel rows that output row reads, interleaved (position p of
kernel row ky at byte ``p * S + ky``, S = kernel rows), so the window of any output is the S x
kw bytes from ``ox * stride * S`` on: one ``VLDRB.S8`` and one ``VMLADAV.S8`` against the
channel's weights, placed once per channel in the lanes of that window. No ring rotates, so the
weights are gathered once per channel. Input rows that an output row does not read go to a
spare block of the plane (no branch per pixel).

Why the integers are the reference's: as in mve_dw.py (every tap read, padding holds the zero
point and each sum starts at ``bias - zp * sum(w)``; lanes outside the window have weight 0;
the double rounding with ``VQRDMULH`` and ``VRSHL``). In place only over the whole input (same
offset and shape): a chunk's eight channels are copied before any of their outputs is written,
and an output byte overwrites only the input byte of the same pixel and channel.
"""
from __future__ import annotations

from ....ops.conv2d import conv_geometry
from .common import in_place
from .mve_dw import BYTES, LANES, MveDepthwise, info_geometry
from .registry import STACK_SCRATCH_LIMIT, arena_gap

CHUNK = 8   # channels moved into planes at once (int16 lanes of a VLDRB.S16)


def plane_layout(g: dict) -> dict:
    """The planes of one chunk: per output row a block of Wp positions x S kernel rows, one spare
    block for the rows no output reads, the bytes the last windows read beyond, the scratch size."""
    S = g["kh"]  # one byte per kernel row (dilated rows are other rows of the map, copied there)
    wp = max(g["pad_l"] + g["iw"], (g["ow"] - 1) * g["sw"] + (g["kw"] - 1) * g["dw"] + 1)
    blk = wp * S
    plane = (g["oh"] + 1) * blk
    T = ((g["kw"] - 1) * g["dw"] + 1) * S
    nvec = -(-T // BYTES)
    blocks = -(-g["ow"] // LANES)
    overrun = (LANES * blocks - 1) * g["sw"] * S + nvec * BYTES    # bytes the last window of a row reads
    fill = -(-CHUNK * plane // BYTES) * BYTES
    scratch = -(-max(fill, (CHUNK - 1) * plane + (g["oh"] - 1) * blk + overrun) // BYTES) * BYTES
    return {"S": S, "wp": wp, "blk": blk, "plane": plane, "T": T, "nvec": nvec, "blocks": blocks,
            "fill": fill, "scratch": scratch, "iw_used": min(g["iw"], wp - g["pad_l"])}


def window_lanes(g: dict, lay: dict) -> tuple[list[int], list[int]]:
    """Per lane of the window's vectors, which of a channel's kh * kw weights (ky, kx order) it
    takes, and per vector the mask of the lanes that take one: tap (ky, kx) is byte kx * dw * S + ky."""
    n = lay["nvec"] * BYTES
    offsets, taken = [0] * n, [0] * n
    for ky in range(g["kh"]):
        for kx in range(g["kw"]):
            at = kx * g["dw"] * lay["S"] + ky
            offsets[at], taken[at] = ky * g["kw"] + kx, 1
    masks = [sum(1 << b for b in range(BYTES) if taken[v * BYTES + b]) for v in range(lay["nvec"])]
    return offsets, masks


class MveDepthwiseChannels(MveDepthwise):
    name = "mve_dwc"
    priority = 43  # above the ring kernel, which takes the layers whose planes do not fit
    template = "ops_mve/dwc.c.j2"
    cost_kinds = {"mve_dwc": ("windows", "vmladav", "rows", "copies", "fills", "channels", "const")}
    cost_reduced = {"mve_dwc": ("windows", "copies", "channels")}
    cost_work = {"mve_dwc": (("windows", LANES),)}

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why is not None:
            return why
        g = conv_geometry(node, graph)
        lay = plane_layout(g)
        if lay["T"] > 4 * BYTES:
            return "kernel window of more than 64 bytes"
        if lay["plane"] * (CHUNK - 1) >= 2**16:
            return f"channel planes of {lay['plane']} B (the scatter's offsets are 16-bit)"
        if plan is not None:
            if in_place(plan, node.inputs[0], node.outputs[0]):
                px, py = plan.placements[node.inputs[0]], plan.placements[node.outputs[0]]
                if px.offset != py.offset or graph.tensors[node.inputs[0]].shape != graph.tensors[node.outputs[0]].shape:
                    return "partly in place"
            index = next(i for i, n in enumerate(graph.nodes) if n.name == node.name)
            if arena_gap(plan, index, lay["scratch"]) is None and lay["scratch"] > STACK_SCRATCH_LIMIT // 4:
                return f"channel planes of {lay['scratch']} B fit no free arena gap (the ring kernel needs less)"
        return None

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        g = conv_geometry(node, graph)
        lay = plane_layout(g)
        wo, wm = window_lanes(g, lay)
        ctx = sel.ctx
        ctx.update(pl=lay, wo=wo, wm=wm,
                   scratch_bytes=lay["scratch"],
                   summary=f"8 channels at a time moved into planes of interleaved kernel rows (VSTRB.16 scatters), "
                           f"one VMLADAV.S8 per output ({lay['nvec']} vector(s) of 16 lanes), int8 weights, "
                           f"vectorised requantization")
        oc = g["oc"]
        sel.weight_bytes = len(ctx["w_bytes"]) + 10 * oc + len(ctx["wo"]) + 2 * len(ctx["wm"])
        return sel

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Windows (one VMLADAV each), their blocks of four, rows, the copies into the planes and the fills."""
        g = info_geometry(info)
        ih, kh, oh, oc = g["ih"], g["kh"], g["oh"], g["oc"]
        lay = plane_layout(g)
        chunks = -(-oc // CHUNK)
        windows = oc * oh * lay["blocks"]
        return "mve_dwc", {"windows": windows, "vmladav": windows * LANES * lay["nvec"], "rows": oc * oh,
                           "copies": chunks * ih * lay["iw_used"] * kh, "fills": chunks * lay["fill"] // BYTES,
                           "channels": oc, "const": 1}


VARIANTS = (MveDepthwiseChannels(),)
