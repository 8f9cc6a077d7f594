"""DSP convolutions with few input channels (ic <= 4: first layers over audio features or RGB pixels,
e.g. KWS's 10x4x1 and ResNet-8's / VWW's 3x3x3), templates/cortexm/ops_dsp/conv2d_fewch.c.j2, docs/kernels.md.

The GEMM's im2col copies a pixel's window run by run and takes a slow byte path wherever a run crosses
the map's border; with 1-4 channels every run is a few bytes, so that bookkeeping costs as much as the
copy. Here the kernel rows an output row reads are first copied once into a window of padded rows (the
zero point in the border columns and in rows outside the map), so every pixel's im2col is the same
straight-line code of whole-word loads, with no test per run; run tails of 1-3 bytes are one word load
too (the bytes past the run meet zero weights, or are repacked by PKHBT/PKHTB). The micro-kernel is
the GEMM's 3 pixel x 2 channel SMLAD step with the same weight stream (int16 pairs, or int8 words under
``size``/``balanced``), fully unrolled over the few k-pairs of such a layer; int8 words are widened to int16 pairs in
RAM once per call where that is small (WIDEN_MAX_BYTES), so the steps are the int16 kernel's. Row-fused (ir/planner.py),
the kernel computes ranges of output pixels into a ring of rows, over a ring of input rows."""
from __future__ import annotations

from ....ops.conv2d import conv_geometry
from .common import in_place, run_pairs
from .conv2d_gemm import GEMM_CHANNELS, GEMM_PIXELS, ConvGemm
from .conv2d_gemm_int8 import GemmInt8Layout

#: the most input channels the variant takes (a pixel's run of kw * ic bytes stays short)
MAX_CHANNELS = 4
#: k-pairs up to which the micro-kernel's steps are emitted without a loop
FULL_UNROLL = 40
#: int8 weights: the most RAM the weight stream widened to int16 pairs may take (once per call, so the micro-kernel
#: reads one LDRD per k-pair step instead of LDR + two SXTB16): VWW's first conv 608 B, ResNet-8's 1,216 B; KWS's
#: 10x4 over 64 channels (6 KB) keeps the SXTB16s rather than the RAM
WIDEN_MAX_BYTES = 2048


def window_geometry(g: dict) -> dict:
    """The padded window of kernel rows: columns the output row reads (from input column -pad_l on), the
    input columns copied into it and where, and its row pitch (3 bytes of slack after the last column,
    read by the word load of a run's tail; a multiple of 4)."""
    cols = (g["ow"] - 1) * g["sw"] + g["kw"]                 # padded columns an output row reads
    copy_cols = min(g["iw"], cols - g["pad_l"])              # input columns inside them
    pitch = -(-(cols * g["ic"] + 3) // 4) * 4
    return {"win_cols": cols, "copy_bytes": copy_cols * g["ic"], "copy_at": g["pad_l"] * g["ic"], "pitch": pitch}


class ConvFewChannels(ConvGemm):
    name = "conv2d_fewch"
    # above the GEMM: under --optimize speed the int16 layout goes first, where the flash allows
    priority = 12
    template = "ops_dsp/conv2d_fewch.c.j2"
    # any range of output pixels starting at a block (a multiple of GEMM_PIXELS), rings of rows in and out: a
    # first layer row-fused into the depthwise after it (ir/planner.py) keeps this kernel
    row_ranges = True
    cost_kinds = {"fewch": ("pixels", "win_rows", "win_words", "copy_words", "mk_steps", "mk_blocks", "outputs",
                            "blocks", "const")}
    cost_reduced = {"fewch": ("pixels", "mk_steps", "outputs")}
    cost_work = {"fewch": (("mk_steps", GEMM_PIXELS * GEMM_CHANNELS * 2), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        return graph.tensors[node.inputs[0]].shape[2] <= MAX_CHANNELS and list(node.attrs["dilation"]) == [1, 1]

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        if plan is not None and in_place(plan, node.inputs[0], node.outputs[0]):
            return "in place over its input"
        return None

    def k_pair_order(self, nruns, rp):
        """Runs of 4q + 1 bytes (3x3 over 3 channels: 9) end in a half pair (last byte, zero): two runs' last
        bytes share one k-pair instead (a micro-kernel step fewer per two kernel rows, one PKHBT more in the
        im2col for one store fewer). Order: each run's whole-word pairs, then the merged last bytes."""
        if len(rp) < 2 or rp[-1][1] != -1 or rp[-1][0] % 4 or nruns < 2:      # a lone last byte after whole words
            return super().k_pair_order(nruns, rp)
        full = rp[:-1]
        last = rp[-1][0]
        order = [((r, a), (r, b)) for r in range(nruns) for a, b in full]
        order += [((r, last), (r + 1, last if r + 1 < nruns else -1)) for r in range(0, nruns, 2)]
        return order

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        d = sel.ctx
        g = conv_geometry(node, graph)
        win = window_geometry(g)
        d.update(win)
        # last bytes of two runs in one k-pair (k_pair_order): the im2col's layout follows
        d["merged_tails"] = d["kwords"] < len(d["runs"]) * d["words_per_run"]
        d["full_unroll"] = d["kwords"] <= FULL_UNROLL
        d["run_words"] = d["run_len"] // 4
        d["col_bytes"] = 4 * GEMM_PIXELS * d["kwords"]
        d["scratch_bytes"] = d["col_bytes"] + g["kh"] * win["pitch"]
        d["widen"] = None
        fusion = plan.fusion_of(node.name) if plan is not None else None
        # calls per inference: one per step of a row fusion (the producer skips the steps it has nothing to add)
        d["calls"] = 1 if fusion is None else len(set(fusion.a_end)) if fusion.producer == node.name \
            else len(fusion.a_end)
        if self.int8_weights:
            npairs = d["oc_pad"] // 2
            tail = len(d["w_words"]) // npairs - 2 - d["kwords"]     # the requantization record words of a pair
            words = npairs * (2 + 2 * d["kwords"] + tail)
            if 4 * words <= WIDEN_MAX_BYTES:
                # doubled while widened where the SMMLAR epilogue takes the doubled accumulator (as the int16
                # variant's weights are doubled in flash, conv2d_gemm.py): one LSL fewer per output
                double = bool(d.get("smmlar"))
                d["widen"] = {"words": words, "tail": tail, "double": double}
                d["acc_doubled"] = double
                d["scratch_bytes"] += 4 * words
                d["summary"] += ", widened to int16 pairs in RAM per call"
        d["summary"] = d["summary"].replace("im2col", f"padded {g['kh']}-row window, im2col", 1)
        return sel

    def compact_records(self, sel) -> bool:
        # the template reads the full (M, Ahi, e) records of the stream (and widens the stream around them)
        return False

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Pixels (straight-line im2col), window rows and words, micro-kernel steps and blocks, outputs."""
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, kw = info["kernel"]
        sw = info["stride"][1]
        g = {"ow": ow, "sw": sw, "kw": kw, "ic": ic, "iw": iw, "pad_l": info["pad"][1]}
        win = window_geometry(g)
        rp = run_pairs(kw * ic)
        kwords = len(self.k_pair_order(kh, rp))
        blocks = -(-oh * ow // GEMM_PIXELS)
        pairs = -(-oc // GEMM_CHANNELS)
        return self.cost_kind, {
            "pixels": oh * ow, "win_rows": oh * kh, "win_words": kh * win["pitch"] // 4,
            "copy_words": oh * kh * -(-win["copy_bytes"] // 4), "mk_steps": blocks * pairs * kwords,
            "mk_blocks": blocks * pairs, "outputs": oh * ow * oc, "blocks": blocks, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"ic{info['in'][2]}", f"rq-{info.get('rq') or 'none'}"]


class ConvFewChannelsInt8(GemmInt8Layout, ConvFewChannels):
    name = "conv2d_fewch_int8"
    priority = 11
    cost_kinds = {"fewch_int8": ConvFewChannels.cost_kinds["fewch"]}
    cost_reduced = {"fewch_int8": ConvFewChannels.cost_reduced["fewch"]}
    cost_work = {"fewch_int8": ConvFewChannels.cost_work["fewch"]}

    def instructions_saved_by_int16(self, sel) -> int:
        d = sel.ctx
        if d["widen"]:  # the micro-kernels are the same: int16 weights save the widening (measured ~6 per word) per call
            return 6 * d["widen"]["words"] * d["calls"]
        return GemmInt8Layout.instructions_saved_by_int16(self, sel)


VARIANTS = (ConvFewChannels(), ConvFewChannelsInt8())
