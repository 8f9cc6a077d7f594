"""Helium (MVE) GEMM for cores that have it (Cortex-M55): convolutions (any kernel size,
stride, padding and dilation; not depthwise) and dense layers as dot products of 16 int8 lanes
(``VMLADAVA.S8``) accumulated into int32, four output channels per pass so that each input
vector is loaded once for four weight vectors (templates/cortexm/ops_mve/gemm.c.j2).
Depthwise convolutions keep the DSP kernels.

Why the integers are the reference's (docs/kernels.md):

* uint8 inputs are flipped to int8 (``x ^ 0x80 = x - 128``) as they are loaded, and every
  padding tap of the im2col buffer holds the input zero point (shifted the same way), so the
  dot product over all taps is ``sum_valid (x - zp) * w + zp' * sum_all w``; the bias stored
  with the kernel is ``bias - zp' * sum_all w`` (dense layers: ``bias + 128 * sum w`` for
  uint8 inputs, their zero point is in the bias already);
* weights are zero-padded to whole vectors (K to a multiple of 16, output channels to a
  multiple of 4), so padded lanes add nothing;
* ``VMLADAVA`` adds into a 32-bit register modulo 2^32. The contract's static check bounds
  the true accumulator to int32, and wrapping additions in any order end at that value.
* TFLite's double rounding of 8-bit outputs without a fused add is vectorised over the pass's
  four channels (:func:`vector_requant`), with the per-lane constants of the Helium depthwise
  kernel's argument (mve_dw.py): ``VQRDMULH`` is SaturatingRoundingDoublingHighMul, ``VRSHL``
  by -e of ``y + (y >> 31)`` is RoundingDivideByPOT, the zero point is added with saturation
  before the clamp; the other requantizations keep the scalar epilogue.

The weights of a pass are interleaved 16 bytes per row (row 0's bytes k..k+15, row 1's, ...), so
one pointer with small immediate offsets walks all four rows.
"""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .base import KernelVariant, Selection
from .common import in_place, requant_ctx, residual_ctx, valid_taps

ROWS = 4      # output channels per pass
LANES = 16    # int8 lanes of a Helium vector


def vectors(n: int) -> int:
    """Helium vector steps over n bytes."""
    return -(-n // LANES)


def _shifted_bias(node, graph) -> tuple[np.ndarray, int]:
    """The bias stored with the kernel (the input zero point's share folded in) and the padding
    value of the im2col buffer, in the shifted codes."""
    x = graph.tensors[node.inputs[0]]
    w = graph.constants[node.inputs[1]].astype(np.int64)
    bias = graph.constants[node.inputs[2]].astype(np.int64)
    flip = x.dtype == "uint8"
    wsum = w.reshape(w.shape[0], -1).sum(axis=1)
    if node.op == "conv2d":
        zp_s = x.zero_point - 128 if flip else x.zero_point
        return bias - zp_s * wsum, zp_s
    return (bias + 128 * wsum if flip else bias), 0


def vector_requant(node, graph, ocp: int) -> dict | None:
    """The per-lane tables of the vectorised double-rounding epilogue, four channels per pass:
    rows of four int32 per group (M; the left shift when any channel has one; minus the right
    shift when any has one; a mask of the lanes that round, when only some do). None where the
    scalar epilogue applies (other roundings, a fused add, wider outputs, a saturating M)."""
    rq = node.attrs.get("requant")
    y = graph.tensors[node.outputs[0]]
    if rq is None or rq.rounding != "double" or node.attrs.get("residual") or y.dtype not in ("int8", "uint8"):
        return None
    if rq.left_shift < 0 or any(m < 0 or m >= 2**31 for m in rq.multiplier):
        return None
    n = len(rq.multiplier)
    mult = [int(m) for m in rq.multiplier] * (1 if n > 1 else ocp)
    shift = [int(v) for v in rq.shift] * (1 if len(rq.shift) > 1 else ocp)
    pad = ocp - len(mult)
    mult, shift = mult + [0] * pad, shift + [31] * pad                # padded channels: never stored
    left = [rq.left_shift + max(31 - v, 0) for v in shift]
    right = [max(v - 31, 0) for v in shift]
    if max(left) > 31:
        return None
    rows = [mult]
    if any(left):
        rows.append(left)
    rounds = "all" if all(right) else "some" if any(right) else "none"
    if rounds != "none":
        rows.append([-r for r in right])
    if rounds == "some":
        rows.append([-1 if r else 0 for r in right])
    table = [row[g * ROWS + j] for g in range(ocp // ROWS) for row in rows for j in range(ROWS)]
    # the compact form (compact_vector_requant): M per channel as int32, the other rows (all within int8) as bytes
    btable = [row[g * ROWS + j] for g in range(ocp // ROWS) for row in rows[1:] for j in range(ROWS)]
    return {"table": table, "rows": len(rows), "left": bool(any(left)), "rounds": rounds,
            "zp_y": rq.zero_point, "lo": rq.lo, "hi": rq.hi, "compact": False, "mtable": list(mult), "btable": btable}


def compact_vector_requant(sel) -> bool:
    """Switch a selection's vectorised epilogue to its compact tables (the default flash goal's lean layouts,
    codegen._compact_for_flash_goal): M per channel as int32 and the shift rows as int8, read by VLDRB.S32
    instead of VLDRW (one load per row either way): 4 + (rows - 1) bytes per channel instead of 4 x rows."""
    q = sel.ctx.get("vrq")
    if not q or q["compact"] or q["rows"] < 2 or not all(-128 <= v <= 127 for v in q["btable"]):
        return False
    q["compact"] = True
    sel.weight_bytes -= 4 * len(q["table"]) - 4 * len(q["mtable"]) - len(q["btable"])
    sel.ctx["summary"] += ", compact requantization tables"
    return True


class _MveGemm(KernelVariant):
    """What the convolution and dense forms share: int8 weights zero-padded to whole vectors."""

    features = frozenset({"dsp", "mve"})
    priority = 40
    template = "ops_mve/gemm.c.j2"

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if x.dtype not in ("int8", "uint8"):
            return f"{x.dtype} input"
        w = graph.constants[node.inputs[1]]
        if w.size == 0 or w.min() < -128 or w.max() > 127:
            return "weights outside int8"
        b2, zp_s = _shifted_bias(node, graph)
        if not -128 <= zp_s <= 127:
            return "input zero point outside int8 after the uint8 flip"
        if np.abs(b2).max(initial=0) >= 2**31:
            return "bias with the zero point's share folded in exceeds int32"
        return None

    def select(self, node, graph, plan) -> Selection:
        x = graph.tensors[node.inputs[0]]
        w = graph.constants[node.inputs[1]].astype(np.int64)
        conv = node.op == "conv2d"
        flip = x.dtype == "uint8"
        oc = w.shape[0]
        flat = w.reshape(oc, -1)                          # conv: (oc, kh, kw, ic) -> (ky, kx, ic) order
        k = flat.shape[1]
        kp = vectors(k) * LANES
        ocp = -(-oc // ROWS) * ROWS
        wp = np.zeros((ocp, kp), np.int64)
        wp[:oc, :k] = flat
        # interleaved per pass: (group, k / 16, row, 16 bytes)
        wp = wp.reshape(ocp // ROWS, ROWS, kp // LANES, LANES).transpose(0, 2, 1, 3)
        b2, zp_s = _shifted_bias(node, graph)
        b2 = np.concatenate([b2, np.zeros(ocp - oc, np.int64)])
        ctx = {"conv": conv, "k": k, "kp": kp, "oc": oc, "ocp": ocp, "flip": flip, "zp_s": int(zp_s),
               "w_bytes": wp.reshape(-1).tolist(), "b_words": b2.tolist(), "uses_bias": False}
        if conv:
            ctx["g"] = conv_geometry(node, graph)
            ctx["scratch_bytes"] = kp
            ctx["summary"] = (f"im2col of {k} int8 per pixel, {ROWS} output channels per pass of "
                              f"{kp // LANES} VMLADAVA.S8 steps")
        else:
            ctx["summary"] = f"{ROWS} rows per pass of {kp // LANES} VMLADAVA.S8 steps"
        rq = node.attrs.get("requant")
        vrq = vector_requant(node, graph, ocp)
        ctx["vrq"] = vrq
        ctx.update({"fast": False} if vrq else requant_ctx(rq, ocp))
        ctx.update(residual_ctx(node, graph))
        if node.attrs.get("residual"):
            ctx["summary"] += ", fused residual add"
        if vrq:
            ctx["summary"] += ", requantization of 4 channels at once"
        return Selection(self.name, self.template, ctx=ctx,
                         weight_bytes=ocp * kp + 4 * ocp + 4 * len(vrq["table"] if vrq else []))

    def flash_bytes(self, sel: Selection, node, graph) -> int:
        # int8 weights: they replace the layer's weights and bias in flash (the reference copy is
        # compiled out), so only their padding is extra
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes
                   - graph.constants[node.inputs[2]].nbytes)

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


class MveGemm(_MveGemm):
    name = "mve_gemm"
    ops = ("conv2d",)
    row_ranges = True  # pixel by pixel: any range of output pixels, rings of rows in and out (ir/planner.py)
    cost_kinds = {"mve_gemm": ("pixels", "rows_full", "rows_full_vec", "rows_pad", "rows_pad_vec", "taps_edge",
                               "taps_edge_vec", "passes", "vsteps", "outputs", "const")}
    cost_reduced = {"mve_gemm": ("pixels", "vsteps", "passes", "outputs")}
    cost_work = {"mve_gemm": (("outputs", 1),)}

    def claims(self, node) -> bool:
        return not node.attrs["depthwise"]

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts of the convolution: the im2col copies (a whole kernel row at once, else
        tap by tap; fills for rows and taps in the padding) in vector steps, then ceil(oc / 4)
        passes of kp / 16 VMLADAVA steps per pixel."""
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, kw = info["kernel"]
        sh, sw = info["stride"]
        dh, dw = info.get("dilation", (1, 1))
        pt, pl = info["pad"][0], info["pad"][1]
        row = kw * ic
        rows_in = valid_taps(oh, ih, kh, sh, pt, dh)
        rows_pad = oh * kh - rows_in
        full = sum(1 for ox in range(ow) if dw == 1 and ox * sw - pl >= 0 and ox * sw - pl + kw - 1 < iw)
        rows_full = rows_in * full
        taps_edge = rows_in * (ow - full) * kw
        passes = oh * ow * -(-oc // ROWS)
        return "mve_gemm", {"pixels": oh * ow, "rows_full": rows_full, "rows_full_vec": rows_full * vectors(row),
                            "rows_pad": rows_pad * ow, "rows_pad_vec": rows_pad * ow * vectors(row),
                            "taps_edge": taps_edge, "taps_edge_vec": taps_edge * vectors(ic), "passes": passes,
                            "vsteps": passes * vectors(kh * kw * ic), "outputs": oh * ow * oc, "const": 1}


class MveDense(_MveGemm):
    name = "mve_dense"
    ops = ("dense",)
    cost_kinds = {"mve_dense": ("passes", "vsteps", "outputs", "const")}
    cost_reduced = {"mve_dense": ("vsteps", "outputs")}
    cost_work = {"mve_dense": (("outputs", 1),)}

    def refusal(self, node, graph, plan) -> str | None:
        if node.attrs.get("residual") or in_place(plan, node.inputs[0], node.outputs[0]):
            return "in place or with a fused residual add"
        return super().refusal(node, graph, plan)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """ceil(n_out / 4) passes of ceil(n_in / 16) VMLADAVA steps."""
        n_in = int(np.prod(info["in"]))
        n_out = int(np.prod(info["out"]))
        passes = -(-n_out // ROWS)
        return "mve_dense", {"passes": passes, "vsteps": passes * vectors(n_in), "outputs": n_out, "const": 1}


VARIANTS = (MveGemm(), MveDense())
