"""DSP depthwise kh x kw with the fewest flash bytes (what ``--optimize balanced`` takes to meet the default
flash goal): per channel the int8 weights (the model's (kh, kw, channels) layout), the int32 bias, the
multiplier M and one shift byte, 9 + 4 + 4 + 1 = 18 bytes for a 3 x 3 channel, and one shape-generic C body
that every layer using it shares (sharing.py): the geometry is a per-layer array of words, not constants
in the code. Per group of four channels and band of output rows (the whole map where the buffer holds it), the
band's input rows are transposed into four channel planes of column pairs, then each channel's set-up (its
weights and requantization constants) is done once per band and its outputs computed two per step
(templates/cortexm/ops_dsp/dw3_compact.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from ....ir.planner import DW_STEP_ROWS
from ....ops.conv2d import conv_geometry, depthwise_inplace_rows
from .base import KernelVariant, Selection
from .common import Int8WeightsRefusal, accumulator_bounds, doubled_constants, requant_ctx

#: the geometry of a layer, as int16 halves of words in this order (the low half first), in its record
DIMS = ("ih", "iw", "c", "oh", "ow", "sh", "sw", "pad_t", "pad_l", "wq", "lo", "hi", "k1", "neg_2zp", "ring_in",
        "bo")
#: words of a record before the per-channel arrays: DIMS in halves, then the arena offset of the buffer
HEAD_WORDS = len(DIMS) // 2 + 1
#: channels per group: one pixel word of int8 input holds four, transposed into four planes at once
GROUP = 4


def half_words(values) -> list[int]:
    """Pairs of int16 values as int32 words (the first value in the low half)."""
    out = []
    for lo, hi in zip(values[0::2], values[1::2]):
        w = (int(lo) & 0xFFFF) | ((int(hi) & 0xFFFF) << 16)
        out.append(w - (1 << 32) if w >= 1 << 31 else w)
    return out


def compact_dw_constants(rqc: dict, zp_out: int) -> tuple[list[int], list[int]] | None:
    """Per channel (M, s = e - 1) of ek_dsp_rq; the kernel recomputes the rest of doubled_constants' SMMLAR
    constants from the shift byte: K = 2 Ahi = (1 + 2 zp) << s (contract.fast_double_rounding's Ahi is
    (1 + 2 zp) << (e - 2)) and the shift s + 1. None where the records say otherwise."""
    if not rqc.get("fast"):
        return None
    for ahi, sh in zip(rqc["fahi"], rqc["fsh"]):
        if not 1 <= sh <= 31 or ahi != (1 + 2 * zp_out) * (1 << (sh - 1)):
            return None
    return list(rqc["fm"]), list(rqc["fsh"])


def _accumulator_bounds(node, graph):
    x = graph.tensors[node.inputs[0]]
    w = graph.constants[node.inputs[1]]
    return accumulator_bounds(graph.constants[node.inputs[2]], w.reshape(-1, w.shape[-1]).T, x.dtype, x.zero_point)


def _overlap(plan, a: str, b: str) -> bool:
    pa, pb = plan.placements.get(a), plan.placements.get(b)
    if pa is None or pb is None or pa.buffer != pb.buffer:
        return False
    return pa.buffer != "arena" or (pa.offset < pb.offset + pb.size and pb.offset < pa.offset + pa.size)


def _in_place(node, graph, plan) -> bool:
    """Whether the output is exactly over the input, row for row (ops/conv2d.py depthwise_inplace_rows)."""
    pa, pb = plan.placements.get(node.inputs[0]), plan.placements.get(node.outputs[0])
    return (pa is not None and pb is not None and pa.buffer == pb.buffer == "arena" and pa.offset == pb.offset
            and depthwise_inplace_rows(node, graph) > 0)


def ring_columns(g: dict) -> int:
    """int16 columns of a row of the former ring of 3 rows x all channels (its bytes, 2 x 3 x columns x channels, bound
    the band buffer of a layer not in place, so it finds free arena bytes where that ring did)."""
    odd = g["ow"] % 2
    need = max(g["pad_l"] + g["iw"], g["ow"] + 2 + odd if g["sw"] == 1 else 2 * g["ow"] + 2 + 2 * odd)
    return need + need % 2


def pair_columns(g: dict) -> int:
    """Column pairs (words) of a plane row: the pairs the two-output steps read (an odd last output takes a whole
    step); the input columns beyond them are not read."""
    return (g["ow"] + 1) // 2 + 1 if g["sw"] == 1 else g["ow"] + 1


def band_bytes(g: dict, bo: int) -> int:
    """The buffer of a band of ``bo`` output rows: four planes of column-pair words, (bo - 1) sh + 3 rows each (stride 2
    steps two output rows: an odd band's last step reads two rows more), then a channel's sums over the band."""
    if g["sh"] == 1:
        rows, sums = bo + 2, 2 * bo * ((g["ow"] + 1) // 2)
    else:
        rows, sums = 2 * (bo + bo % 2) + 1, (bo + bo % 2) * g["ow"]
    return GROUP * 4 * pair_columns(g) * rows + 4 * sums


def band_rows(g: dict, in_place: bool, fused_rows: int | None) -> int:
    """Output rows per band: a row-fused consumer's rows per call; in place the whole map (a later band's input rows
    would already be overwritten); otherwise the most whose buffer fits in the bytes of the former ring (at least
    one row), the whole map where it fits."""
    if fused_rows is not None:
        return max(1, min(fused_rows, g["oh"]))
    if in_place:
        return g["oh"]
    budget = max(2 * 3 * ring_columns(g) * g["oc"], band_bytes(g, 1))
    bo = g["oh"]
    while bo > 1 and band_bytes(g, bo) > budget:
        bo -= 1
    return bo


class Dw3Compact(Int8WeightsRefusal, KernelVariant):
    name = "dw3_compact"
    ops = ("conv2d",)
    features = frozenset({"dsp"})
    priority = 1
    template = "ops_dsp/dw3_compact.c.j2"
    # offered under no objective: the default flash goal's policy (codegen._compact_for_flash_goal) switches
    # layers to it, fewest instructions lost per flash byte saved first
    modes = frozenset()
    # as a row-fused consumer: whole output rows per call, its input a ring of rows (ir/planner.py)
    row_ranges = True
    cost_kinds = {"dw3_compact": ("ring", "fill", "steps", "chunks", "outputs", "const")}
    cost_reduced = {"dw3_compact": ("steps", "outputs")}
    cost_work = {"dw3_compact": (("outputs", 9),)}

    def claims(self, node) -> bool:
        return node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        a = node.attrs
        g = conv_geometry(node, graph)
        if x.dtype != "int8" or y.dtype != "int8":
            return f"{x.dtype} input or {y.dtype} output (it reads and writes int8)"
        if a["depth_multiplier"] != 1 or a.get("residual") or g["dh"] != 1 or g["dw"] != 1:
            return "depth multiplier, fused add or dilation"
        if max(g["ih"], g["iw"], g["oc"]) * 2 + 4 > 2**15 - 1:
            return "dimensions beyond its int16 geometry record"
        if g["oc"] % 4:
            return f"{g['oc']} channels (four per step)"
        fusion = plan.fusion_of(node.name) if plan is not None else None
        if fusion is not None and fusion.producer == node.name:
            return "row-fused as the producer (it computes rows of an input ring, not into an output ring)"
        if (g["kh"], g["kw"]) != (3, 3) or g["sw"] not in (1, 2) or g["sh"] != g["sw"] or g["pad_t"] > 2:
            return "a kernel other than 3 x 3 with stride 1 x 1 or 2 x 2"
        # in place: each input row is in the ring before an output row overwrites it
        if plan is not None and _overlap(plan, node.inputs[0], node.outputs[0]):
            if not _in_place(node, graph, plan):
                return "output over part of its input"
        rq = a.get("requant")
        if rq is None or compact_dw_constants(requant_ctx(rq, g["oc"]), rq.zero_point) is None:
            return "a requantization other than TFLite's double rounding in its one-multiply form"
        if doubled_constants(rq, _accumulator_bounds(node, graph)) is None:
            return "accumulators too wide to double (the SMMLAR epilogue)"
        return None

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        rq = node.attrs["requant"]
        oc = g["oc"]
        w = graph.constants[node.inputs[1]]                               # (kh, kw, oc)
        bias = graph.constants[node.inputs[2]]
        m, sh = compact_dw_constants(requant_ctx(rq, oc), rq.zero_point)
        if len(m) == 1:
            m, sh = m * oc, sh * oc
        fusion = plan.fusion_of(node.name) if plan is not None else None
        in_place = plan is not None and _overlap(plan, node.inputs[0], node.outputs[0])
        bo = band_rows(g, in_place, DW_STEP_ROWS if fusion is not None else None)
        dims = {"ring_in": fusion.ring_rows if fusion is not None else 0, "bo": bo, "wq": pair_columns(g), "ih": g["ih"], "iw": g["iw"], "c": oc, "oh": g["oh"], "ow": g["ow"], "sh": g["sh"], "sw": g["sw"],
                "pad_t": g["pad_t"], "pad_l": g["pad_l"],
                "lo": rq.lo, "hi": rq.hi, "k1": 1 + 2 * rq.zero_point, "neg_2zp": -2 * x.zero_point}
        # after the geometry and the ring's offset (the template adds it): the biases, the multipliers, then as
        # bytes packed into words the weights (per channel its 9, row by row) and the shift bytes
        wbytes = np.concatenate([w.reshape(9, oc).T.reshape(-1), np.array(sh)]).astype(np.int8).view(np.uint8)
        words = wbytes.reshape(-1, 4).astype(np.int64) @ np.array([1, 1 << 8, 1 << 16, 1 << 24], np.int64)
        tail = [int(v) for v in bias] + [int(v) for v in m] + [int(v) - (1 << 32) if v >= 1 << 31 else int(v) for v in words]
        ctx = {"g": g, "dims": half_words([dims[k] for k in DIMS]), "dim_names": DIMS, "tail": tail,
               "uses_bias": False, "scratch_bytes": band_bytes(g, bo),
               "noinline_helpers": ["ek_dw3c_run"],  # the body every layer calls (ops_dsp/dw3_compact_body.c.j2)
               "summary": f"3x3 stride {g['sh']}x{g['sw']}: bands of {bo} output row(s) x 4 channels transposed to "
                          "int16 (x - zp) column pairs, int8 weights, M and a shift byte per channel, two outputs per "
                          "channel and step, shape-generic code"}
        nbytes = 4 * (HEAD_WORDS + len(tail))
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=nbytes)

    def flash_bytes(self, sel, node, graph) -> int:
        # the arrays replace the layer's weights and bias in flash (the reference copy is compiled out)
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes
                   - graph.constants[node.inputs[2]].nbytes)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Trip counts of the buffer's zeroing (4 words per step), of the fill (a column pair of four channels per
        step, per band of the map not in place), of the two-output steps per channel and output row, of the channel
        visits (the per-channel set-up, once per band) and of the outputs (the epilogue)."""
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        sh, sw = info["stride"]
        pt, pl = info["pad"][0], info["pad"][1]
        g = {"ih": ih, "iw": iw, "oh": oh, "ow": ow, "oc": oc, "sh": sh, "sw": sw, "pad_t": pt, "pad_l": pl}
        bo = band_rows(g, False, None)
        bands = -(-oh // bo)
        pairs = min(-(-(pl + iw) // 2), pair_columns(g)) - pl // 2
        return self.name, {"ring": band_bytes(g, bo) // 16, "fill": (oc // GROUP) * (oh - 1 + 3 * bands) * sh * pairs,
                           "steps": oh * -(-ow // 2) * oc, "chunks": oc * bands, "outputs": oh * ow * oc,
                           "const": 1}


VARIANTS = (Dw3Compact(),)
