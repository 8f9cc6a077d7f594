"""DSP global average pooling (templates/cortexm/ops_dsp/gap.c.j2, docs/kernels.md): four channels per
input word, summed in 16-bit lanes by SXTAB16 / SXTAB16 ROR #8 (UXTAB16 for uint8) over chunks of at most
255 pixels, then widened to int32 once per chunk; one division or requantization per channel, the
reference's expression on the same int32 sum."""
from __future__ import annotations

from .base import KernelVariant, Selection
from .common import extend_insn

#: channels per input word (one SXTAB16 pair)
CHANNELS = 4
#: input words summed per pass over the pixels (8 lane accumulators in registers)
GROUP_WORDS = 4
#: pixels per chunk: 255 x 128 (int8) and 255 x 255 (uint8) stay inside a 16-bit lane
CHUNK_PIXELS = 255


def is_global(node, graph) -> bool:
    """An average pool whose one window covers the whole map, no padding."""
    ih, iw, _ = graph.tensors[node.inputs[0]].shape
    a = node.attrs
    return list(a["kernel"]) == [ih, iw] and not any(a["pad"]) and graph.tensors[node.outputs[0]].shape[:2] == (1, 1)


def groups(channels: int) -> list[tuple[int, int]]:
    """(first channel, words) of each pass over the pixels: GROUP_WORDS words, the rest last."""
    words = channels // CHANNELS
    return [(CHANNELS * w0, min(GROUP_WORDS, words - w0)) for w0 in range(0, words, GROUP_WORDS)]


class GlobalAvgPoolDsp(KernelVariant):
    name = "gap_dsp"
    ops = ("avgpool",)
    features = frozenset({"dsp"})
    priority = 10
    template = "ops_dsp/gap.c.j2"
    cost_kinds = {"gap_dsp": ("word_taps", "passes", "tail_taps", "chunks", "outputs", "const")}
    cost_reduced = {"gap_dsp": ("word_taps", "outputs")}
    cost_work = {"gap_dsp": (("word_taps", CHANNELS), ("tail_taps", 1), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        return is_global(node, graph)

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        return None

    def select(self, node, graph, plan) -> Selection:
        x = graph.tensors[node.inputs[0]]
        ih, iw, c = x.shape
        npix = ih * iw
        ctx = {"npix": npix, "channels": c, "groups": groups(c), "c4": c - c % CHANNELS,
               "chunk": CHUNK_PIXELS, "group_words": GROUP_WORDS, "ext": extend_insn(x.dtype), "signed": x.dtype == "int8", "uses_bias": True,
               "summary": f"{npix} pixels, 4 channels per word in 16-bit lanes (SXTAB16), one division per channel"}
        return Selection(self.name, self.template, ctx=ctx)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        ih, iw, c = info["in"]
        npix = ih * iw
        passes = len(groups(c))
        return "gap_dsp", {"word_taps": npix * (c // CHANNELS), "passes": passes,
                           "tail_taps": npix * (c % CHANNELS), "chunks": passes * -(-npix // CHUNK_PIXELS),
                           "outputs": c, "const": 1}


VARIANTS = (GlobalAvgPoolDsp(),)
