"""DSP depthwise kh x 3 (horizontal stride 1 or 2, no dilation, any depth multiplier): input
rows transposed to int16 (x - zp) in a ring of kh rows, two outputs per channel and SMLAD step
(templates/cortexm/ops_dsp/dw3.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import extend_insn, offset_word, pair_words, requant_ctx, residual_ctx


def ring_width(ow: int, iw: int, sw: int, pad_l: int) -> int:
    """int16 columns of one ring row: the input row with its left padding, and room for the
    two-outputs-per-step reads past the last output (even, for word access)."""
    ow_even = ow + (ow & 1)
    need = ow_even + 2 if sw == 1 else 2 * ow_even + 2
    wpad = max(need, iw + pad_l)
    return wpad + (wpad & 1)


class Dw3(KernelVariant):
    name = "dw3"
    ops = ("conv2d",)
    features = frozenset({"dsp"})
    priority = 30
    template = "ops_dsp/dw3.c.j2"
    row_ranges = True  # whole output rows per call, the input a ring of rows (dw_ring.j2; ir/planner.py)
    cost_kinds = {"dw3": ("tr4", "tr1", "rows_loaded", "ring", "pairs_kh", "pairs", "odd_kh", "odd", "colsteps",
                          "rows", "const")}
    cost_reduced = {"dw3": ("pairs_kh", "tr4", "tr1")}
    cost_work = {"dw3": (("pairs_kh", 1),)}

    def claims(self, node) -> bool:
        return node.attrs["depthwise"]

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        g = conv_geometry(node, graph)
        if g["kw"] != 3 or g["dw"] != 1 or g["dh"] != 1 or g["sw"] not in (1, 2):
            return "depthwise kernel other than kh x 3 with horizontal stride 1 or 2 and no dilation"
        return None

    def select(self, node, graph, plan) -> Selection:
        g = conv_geometry(node, graph)
        x = graph.tensors[node.inputs[0]]
        a = node.attrs
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
        bias = graph.constants[node.inputs[2]].astype(np.int64)
        kh, oc = g["kh"], g["oc"]
        rq = a.get("requant")
        rqc = requant_ctx(rq, oc)
        # Per channel and kernel row: stride 1: (w0, w1), (w1, w2); stride 2: (w0, w1), (w2, 0).
        pairs = np.zeros((kh, oc, 2), np.int64)
        for c in range(oc):
            for ky in range(kh):
                w0, w1, w2 = (int(v) for v in w[ky, :, c])
                second = (w1, w2) if g["sw"] == 1 else (w2, 0)
                pairs[ky, c] = [pair_words(w0, w1).item(), pair_words(*second).item()]
        # The ring's slot s holds kernel row (s - rot) mod kh, rot = (oy * sh) mod kh; one record per
        # channel and rotation: the pairs in slot order, the bias, then (M, Ahi, e - 1) if per channel.
        rots = sorted({(oy * g["sh"]) % kh for oy in range(g["oh"])})
        recs = []
        for rot in rots:
            for c in range(oc):
                rec = []
                for slot in range(kh):
                    rec += pairs[(slot - rot) % kh, c].tolist()
                rec.append(int(bias[c]))
                if rqc.get("fast"):
                    rec += rqc["frec"][3 * c:3 * c + 3] if rqc["fast_pc"] else rqc["frec"][:3]
                recs.append(rec)
        wpad = ring_width(g["ow"], g["iw"], g["sw"], g["pad_l"])
        ctx = {"g": g, "mult": a["depth_multiplier"], "wp": wpad, "rec_words": [v for r in recs for v in r],
               "rw": len(recs[0]), "rots": rots,
               "ext": extend_insn(x.dtype), "offset_word": offset_word(x.zero_point), "zp": x.zero_point,
               "scratch_bytes": 2 * kh * g["ic"] * wpad, "uses_bias": False,
               "summary": f"kh x 3 stride {g['sw']}: input rows transposed to int16 (x - zp), two outputs per "
                          "channel and SMLAD step, per-channel records of weight pairs, bias and requantization"}
        ctx.update(rqc)
        ctx.update(residual_ctx(node, graph))
        # the channel loop in assembly: 3 kernel rows, one output per input channel, the SMLAL epilogue
        # with SSAT/USAT, byte or halfword outputs
        y = graph.tensors[node.outputs[0]]
        if kh == 3 and a["depth_multiplier"] == 1 and not a.get("residual") and rqc.get("fast") \
                and y.dtype in ("int8", "uint8", "int16", "uint16") and 2 * kh * wpad + 8 < 4096 \
                and g["oc"] * y.itemsize < 4096:  # LDR/STR immediate offsets of the assembly loop (imm12)
            info = np.iinfo(y.dtype)
            lo = rq.lo if rq.lo > info.min else None     # bounds tighter than the storage type (a fused ReLU)
            hi = rq.hi if rq.hi < info.max else None
            if all(v is None or -255 <= v <= 255 for v in (lo, hi)):
                ctx["asm"] = {"sat": "ssat" if info.min < 0 else "usat", "bits": 8 * y.itemsize, "lo": lo, "hi": hi,
                              "st": "strb" if y.itemsize == 1 else "strh"}
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(ctx["rec_words"]))

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts of the row transposition into the ring and of the two-output steps."""
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, _ = info["kernel"]
        sh, sw = info["stride"]
        pt, pl = info["pad"][0], info["pad"][1]
        last = (oh - 1) * sh + kh - 1 - pt              # last input row brought into the ring
        rows_loaded = max(0, min(ih - 1, last) + 1)
        wp = ring_width(ow, iw, sw, pl)
        col_pairs = iw // 2 + 1
        return "dw3", {"tr4": rows_loaded * col_pairs * (ic // 4), "tr1": rows_loaded * col_pairs * (ic % 4),
                       "rows_loaded": rows_loaded + max(0, last - ih + 1), "ring": ic * kh * wp,
                       "pairs_kh": oh * (ow // 2) * oc * kh, "pairs": oh * (ow // 2) * oc,
                       "odd_kh": oh * (ow % 2) * oc * kh, "odd": oh * (ow % 2) * oc, "colsteps": oh * (-(-ow // 2)),
                       "rows": oh, "const": 1}


VARIANTS = (Dw3(),)
