"""DSP 1x1 convolutions (any stride) with a fused residual add, ResNet-8's shortcuts
(templates/cortexm/ops_dsp/conv1x1_add.c.j2, docs/kernels.md).

With 16 or 32 input channels a shortcut output has 8 or 16 k-pairs of multiplies, and the fused add
(TFLite's ADD: both operands rescaled, summed, requantized) cost more than them in the GEMM's epilogue: three
one-multiply requantizations per output. Both operands of the sum are 8-bit codes, so their rescaled values
are two tables of 256 int32 computed at build time with the contract's own arithmetic (``apply_requant``;
the same integers the reference computes): per output, the conv's code and the residual's code index the
tables, and one requantization of their sum remains, in the SMMLAR form on doubled table entries where the
sum's bound allows (``doubled_constants``). The micro-kernel is the GEMM's 3 pixel x 2 channel step, fully
unrolled over the k-pairs; the im2col of a 1x1 pixel is its channels' words, straight-line."""
from __future__ import annotations

import numpy as np

from ....ir import contract
from .common import requant_ctx, scalar_expr, smmlar_ctx
from .conv2d_fewch import FULL_UNROLL
from .conv2d_gemm import GEMM_CHANNELS, GEMM_PIXELS, ConvGemm
from .conv2d_gemm_int8 import GemmInt8Layout

#: table entries: every code of an 8-bit operand
CODES = 256


def narrow_table(t: np.ndarray) -> tuple[str, int, list[int]]:
    """(C type, shift k, entries >> k) of a table: int16 entries where every entry is a multiple of 2^k and
    the quotients fit (a rescale by exactly 2^L, e.g. TFLite's ratio 1/2: one LDRSH and the ADD's shifted
    operand instead of an LDR, half the flash), else int32 as they are."""
    nz = np.abs(t[t != 0])
    k = min(((int(v) & -int(v)).bit_length() - 1 for v in nz), default=0)
    if nz.size == 0 or int(nz.max()) >> k < 2**15:
        return "int16_t", k, (t >> k).tolist()
    return "int32_t", 0, t.tolist()


def operand_table(rq_in, code_lo: int, zp: int) -> np.ndarray:
    """The add's rescaled operand for every 8-bit code from ``code_lo``: ``requant(code - zp)`` as the
    reference computes it (ops/add.py's arithmetic through the contract)."""
    codes = np.arange(code_lo, code_lo + CODES, dtype=np.int64)
    return contract.apply_requant(codes - zp, rq_in).astype(np.int64)


def _shifted_code(t: np.ndarray, code_lo: int, other: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(k, other + c) where the table ``t`` of the codes from ``code_lo`` is ``code * 2^k + c`` for every code,
    so that ``t[code] + other[j] == (code << k) + (other[j] + c)``; None where it is not, or where the shifted
    code or the folded table leaves int32 (the sum itself is bounded by the caller)."""
    step = int(t[1] - t[0])
    if step <= 0 or step & (step - 1) or not np.array_equal(np.diff(t), np.full(t.size - 1, step)):
        return None
    k = step.bit_length() - 1
    c = int(t[0]) - code_lo * step
    folded = other + c
    if max(abs(code_lo), abs(code_lo + CODES - 1)) << k >= 2**31 or int(np.abs(folded).max()) >= 2**31:
        return None
    return k, folded


def _asm_epilogue(d: dict, rq, node_out_rq, form: dict, lin, lin_k: int, y_lo: int, r_dtype: str,
                  oc_pad: int) -> dict | None:
    """The epilogue in assembly (conv1x1_add.c.j2 asm_rq / asm_add): where the conv's requantization has per-channel
    SMMLAR records in the weight stream, one operand of the add is a shifted code (``lin``), the sum's
    requantization is the SMMLAR form and both clamps are within 8 bits (the conv's folded into the table where
    the table takes the conv's code, else an 8-bit saturation exactly; the output's a saturation and compares);
    else None (the C epilogue)."""
    if not (d.get("fast") and d.get("fast_pc") and d.get("smmlar") and not d.get("rq_table") and form.get("smmlar")
            and lin):
        return None
    # the output's clamp: an 8-bit saturation, then a compare per bound inside it (a fused ReLU: the low one)
    out = node_out_rq
    sat_o = "ssat" if -128 <= out.lo and out.hi <= 127 else "usat" if 0 <= out.lo and out.hi <= 255 else None
    e_o = int(form["fsh"][0])
    if sat_o is None or not 0 <= e_o <= 31:
        return None
    full = (-128, 127) if sat_o == "ssat" else (0, 255)
    clamp_lo = out.lo if out.lo > full[0] else None
    clamp_hi = out.hi if out.hi < full[1] else None
    sat_y = "ssat" if y_lo < 0 else "usat"
    # the shifted code (d.lin "a") is clamped by compares inside the saturation (a fused ReLU: the low bound)
    y_full = (-128, 127) if y_lo < 0 else (0, 255)
    y_clamp_lo = rq.lo if lin == "a" and rq.lo > y_full[0] else None
    y_clamp_hi = rq.hi if lin == "a" and rq.hi < y_full[1] else None
    if 2 * oc_pad + 1 > 4095:
        return None                                        # LDRB/STRB's 12-bit offsets of a block's pixels
    return {"sat_y": sat_y, "lsl_acc": not d.get("acc_doubled"), "sat_o": sat_o, "e_o": e_o, "clamp_lo": clamp_lo,
            "clamp_hi": clamp_hi, "y_clamp_lo": y_clamp_lo, "y_clamp_hi": y_clamp_hi,
            "ms": int(form["fm"][0]), "hs": int(form["fahi"][0]), "k": lin_k,
            "ld_res": "ldrsb" if r_dtype == "int8" else "ldrb"}


class Conv1x1Add(ConvGemm):
    name = "conv1x1_add"
    # above the few-channel variants (a 1x1 over 4 channels with an add is both): the add's tables go first
    priority = 14
    template = "ops_dsp/conv1x1_add.c.j2"
    row_ranges = False
    cost_kinds = {"conv1x1_add": ("pixels", "pixel_words", "mk_steps", "mk_blocks", "outputs", "blocks", "const")}
    cost_reduced = {"conv1x1_add": ("mk_steps", "outputs")}
    cost_work = {"conv1x1_add": (("mk_steps", GEMM_PIXELS * GEMM_CHANNELS * 2), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        a = node.attrs
        return list(a["kernel"]) == [1, 1] and not any(a["pad"]) and bool(a.get("residual"))

    def refusal(self, node, graph, plan) -> str | None:
        if not self.applies(node, graph):
            return "not a 1x1 convolution with a fused residual add"
        why = super().refusal(node, graph, plan)
        if why:
            return why
        x, r = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[3]]
        if x.shape[2] % 4:
            return "input channels not a multiple of 4"
        if r.dtype not in ("int8", "uint8") or graph.tensors[node.outputs[0]].dtype not in ("int8", "uint8"):
            return "residual or output wider than 8 bits"
        rq = node.attrs.get("requant")
        if rq is None or not (-128 <= rq.lo and rq.hi <= 255):
            return "convolution output wider than 8 bits"
        if plan is not None and plan.fusion_of(node.name) is not None:
            return "row-fused (the GEMM computes ranges of output pixels)"
        return None

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        d = sel.ctx
        res, rq = node.attrs["residual"], node.attrs["requant"]
        rt = graph.tensors[node.inputs[3]]
        y_lo = -128 if rq.lo < 0 else 0                   # the conv's codes, clamped to [rq.lo, rq.hi]
        r_lo = -128 if rt.dtype == "int8" else 0
        ta = operand_table(res["in_requant"][0], y_lo, rq.zero_point)
        # by the residual code's byte (LDRB, no sign extension): codes 0..127, then -128..-1 for int8
        tb = np.roll(operand_table(res["in_requant"][1], r_lo, rt.zero_point), r_lo)
        bound = int(np.abs(ta).max() + np.abs(tb).max())  # |sum| for any two codes
        out = res["requant"]
        form = {}
        if out is not None and len(out.multiplier) == 1:
            form = smmlar_ctx(requant_ctx(out, 1), out, [bound], 1)
        if form.get("smmlar"):
            # doubled entries: the sum is the doubled accumulator ek_dsp_rq2d takes
            ta, tb = 2 * ta, 2 * tb
            d["sum_expr"] = (f"{form['clamp_pre']}ek_dsp_rq2d(s_, {form['fm'][0]}, {form['fahi'][0]}, "
                             f"{form['fsh'][0]}){form['clamp_post']}")
        elif out is not None:
            d["sum_expr"] = scalar_expr(out, bound)        # one SMLAL, or None: the reference requantization
            if d["sum_expr"]:
                d["sum_expr"] = d["sum_expr"].format(x="s_")
        # an operand rescaled by a power of two alone (TFLite's ADD: the larger-scale input, ratio 1/2) is its
        # code shifted: its table's constant goes into the other table, and the code's shift replaces a load
        lin_b = _shifted_code(np.roll(tb, -r_lo), r_lo, ta)
        lin_a = None if lin_b else _shifted_code(ta, y_lo, tb)
        if lin_b:
            lin, lin_k, ta = "b", lin_b[0], lin_b[1]
        elif lin_a:
            lin, lin_k, tb = "a", lin_a[0], lin_a[1]
        else:
            lin, lin_k = None, 0
        asm = _asm_epilogue(d, rq, out, form, lin, lin_k, y_lo, rt.dtype, d["oc_pad"]) if out is not None else None
        if asm and lin == "b":
            # the conv's clamp in the table: indexed by the 8-bit saturated code, ta[v] = operand(clamp(v))
            ta = ta[np.clip(np.arange(y_lo, y_lo + CODES), rq.lo, rq.hi) - y_lo]
        (ta_t, ta_k, ta), (tb_t, tb_k, tb) = narrow_table(ta), narrow_table(tb)
        if asm and (ta_k if lin == "b" else tb_k):
            asm = None                                     # a table of shifted entries: the C epilogue
        if asm:
            tab_t = ta_t if lin == "b" else tb_t
            asm["ld_tab"] = ("ldr", 2) if tab_t == "int32_t" else ("ldrsh", 1)
        d["asm_add"] = asm
        d.update(ta=ta, tb=tb, ta_t=ta_t, ta_k=ta_k, tb_t=tb_t, tb_k=tb_k, y_lo=y_lo, r_lo=r_lo, lin=lin,
                 lin_k=lin_k, sum_doubled=bool(form.get("smmlar")),
                 full_unroll=d["kwords"] <= FULL_UNROLL, pixel_words=graph.tensors[node.inputs[0]].shape[2] // 4)
        tables = {"a": (tb_t,), "b": (ta_t,), None: (ta_t, tb_t)}[lin]
        d["summary"] = d["summary"].replace(
            "micro-kernel", "micro-kernel, fused add from " + ("two 256-entry tables" if lin is None else
                                                               "a 256-entry table and a shifted code"))
        sel.weight_bytes += CODES * sum(2 if t == "int16_t" else 4 for t in tables)
        return sel

    def cost_features(self, info: dict) -> tuple[str, dict]:
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        blocks = -(-oh * ow // GEMM_PIXELS)
        pairs = -(-oc // GEMM_CHANNELS)
        return self.cost_kind, {"pixels": oh * ow, "pixel_words": oh * ow * (ic // 4),
                                "mk_steps": blocks * pairs * (ic // 2), "mk_blocks": blocks * pairs,
                                "outputs": oh * ow * oc, "blocks": blocks, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


class Conv1x1AddInt8(GemmInt8Layout, Conv1x1Add):
    name = "conv1x1_add_int8"
    priority = 13
    # not under size: the tables are 2 KB of flash per layer (ResNet-8: 127 k instructions fewer for 4 KB under
    # balanced); --optimize size keeps the GEMM's int8 layout and epilogue
    modes = frozenset({"balanced", "speed"})
    cost_kinds = {"conv1x1_add_int8": Conv1x1Add.cost_kinds["conv1x1_add"]}
    cost_reduced = {"conv1x1_add_int8": Conv1x1Add.cost_reduced["conv1x1_add"]}
    cost_work = {"conv1x1_add_int8": Conv1x1Add.cost_work["conv1x1_add"]}


VARIANTS = (Conv1x1Add(), Conv1x1AddInt8())
