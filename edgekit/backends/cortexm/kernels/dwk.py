"""DSP depthwise of any shape dw3 does not take (kernel size, stride, padding, dilation, 1D),
depth multiplier 1 (templates/cortexm/ops_dsp/dwk.c.j2, docs/kernels.md).

Four channels per step: the input word split by SXTAB16 into (x - zp) halves and multiplied
with SMLABB/SMLATT (one product each, so channels never mix), weights as int16 pairs
(c, c + 2) and (c + 1, c + 3) per tap; channels past the last multiple of 4 one by one. Taps
outside the input are skipped, as in the reference. In place through a ring of pending output
pixels."""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import conv_valid_taps, extend_insn, in_place, offset_word, pair_words, requant_ctx, residual_ctx

#: channels per step (one input word)
CHANNELS = 4


def ring_delay(g: dict) -> int:
    """Output pixels that wait in the ring when the layer runs in place: output pixel p may
    overwrite input pixel p only once every output reading it is done, the last being
    p + pad_t * ow + pad_l."""
    return g["pad_t"] * g["ow"] + g["pad_l"]


class Dwk(KernelVariant):
    name = "dwk"
    ops = ("conv2d",)
    features = frozenset({"dsp"})
    priority = 20
    template = "ops_dsp/dwk.c.j2"
    cost_kinds = {"dwk": ("tapq", "tapt", "rowsq", "groups", "tails", "outputs", "pixels", "const")}
    cost_reduced = {"dwk": ("tapq", "tapt", "outputs")}
    cost_work = {"dwk": (("outputs", 1),)}

    def claims(self, node) -> bool:
        return node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        a = node.attrs
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        if a["depth_multiplier"] != 1:
            return "depthwise kernel other than kh x 3 with a depth multiplier"
        if plan is not None and in_place(plan, node.inputs[0], node.outputs[0]):
            # in place only as the planner's depthwise_inplace_rows makes it: stride 1, same shape, same offset
            px, py = plan.placements[node.inputs[0]], plan.placements[node.outputs[0]]
            if px.offset != py.offset or graph.tensors[node.inputs[0]].shape != graph.tensors[node.outputs[0]].shape \
                    or a["stride"] != [1, 1] or a["dilation"] != [1, 1]:
                return "depthwise kernel other than kh x 3, partly in place"
        return None

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        inplace = plan is not None and in_place(plan, node.inputs[0], node.outputs[0])
        delay = ring_delay(g) if inplace else 0
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
        kh, kw, oc = w.shape
        c4 = oc - oc % CHANNELS
        taps = w.reshape(kh * kw, oc)
        quads = taps[:, :c4].reshape(kh * kw, c4 // CHANNELS, CHANNELS)
        words = np.stack([pair_words(quads[..., 0], quads[..., 2]), pair_words(quads[..., 1], quads[..., 3])],
                         axis=-1)
        rq = node.attrs.get("requant")
        ctx = {"g": g, "c4": c4, "w_words": words.reshape(-1).tolist(), "tail_w": taps[:, c4:].reshape(-1).tolist(),
               "ext": extend_insn(x.dtype), "offset_word": offset_word(x.zero_point), "uses_bias": True,
               "inplace": inplace, "delay": delay,
               "summary": f"{kh} x {kw} taps, 4 channels per step: SXTAB16, SMLABB/SMLATT"}
        if ctx["inplace"]:
            ctx["scratch_bytes"] = (delay + 1) * oc * graph.tensors[node.outputs[0]].itemsize
            ctx["summary"] += f", in place with {delay + 1} pending output pixels"
        ctx.update(requant_ctx(rq, oc))
        ctx.update(residual_ctx(node, graph))
        if node.attrs.get("residual"):
            ctx["summary"] += ", fused residual add"
        return Selection(self.name, self.template, ctx=ctx,
                         weight_bytes=4 * words.size + 2 * (kh * kw * (oc - c4)))

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Executed taps per channel quad and per tail channel, rows, pixels."""
        oh, ow, oc = info["out"]
        vh, vw = conv_valid_taps(info)
        q, t = divmod(oc, CHANNELS)
        return "dwk", {"tapq": vh * vw * q, "tapt": vh * vw * t, "rowsq": vh * ow * q, "groups": oh * ow * q,
                       "tails": oh * ow * t, "outputs": oh * ow * oc, "pixels": oh * ow, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (Dwk(),)
