"""Helium (MVE) kernels for cores that have it (Cortex-M55): selection and build-time layout.

Convolutions (any kernel size, stride, padding and dilation; not depthwise) and dense
layers become dot products of 16 int8 lanes (``VMLADAVA.S8``) accumulated into int32, four
output channels per pass so that each input vector is loaded once for four weight
vectors. The C is ``templates/cortexm/ops_mve/gemm.c.j2``; depthwise convolutions keep the
DSP kernel (dsp.py), everything else its reference kernel.

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
"""
from __future__ import annotations

import numpy as np

from ...ops.conv2d import conv_geometry
from .dsp import Selection, _in_place, _requant_ctx, _residual_ctx

ROWS = 4      # output channels per pass
LANES = 16    # int8 lanes of a Helium vector


def select_mve(node, graph, plan) -> Selection | None:
    """An MVE kernel for a conv2d (not depthwise) or dense node, or None (then the DSP selection)."""
    x = graph.tensors[node.inputs[0]]
    if x.dtype not in ("int8", "uint8"):
        return None
    w = graph.constants[node.inputs[1]].astype(np.int64)
    if w.size == 0 or w.min() < -128 or w.max() > 127:
        return None
    bias = graph.constants[node.inputs[2]].astype(np.int64)
    conv = node.op == "conv2d"
    if conv and node.attrs["depthwise"]:
        return None
    if not conv and (node.attrs.get("residual") or _in_place(plan, node.inputs[0], node.outputs[0])):
        return None
    flip = x.dtype == "uint8"
    oc = w.shape[0]
    flat = w.reshape(oc, -1)                          # conv: (oc, kh, kw, ic) -> (ky, kx, ic) order
    k = flat.shape[1]
    kp = -(-k // LANES) * LANES
    ocp = -(-oc // ROWS) * ROWS
    wp = np.zeros((ocp, kp), np.int64)
    wp[:oc, :k] = flat
    wsum = flat.sum(axis=1)
    if conv:
        zp_s = x.zero_point - 128 if flip else x.zero_point   # the padding value, in the shifted codes
        if not -128 <= zp_s <= 127:
            return None
        b2 = bias - zp_s * wsum
    else:
        zp_s = 0
        b2 = bias + 128 * wsum if flip else bias
    if np.abs(b2).max(initial=0) >= 2**31:
        return None
    b2 = np.concatenate([b2, np.zeros(ocp - oc, np.int64)])
    ctx = {"conv": conv, "k": k, "kp": kp, "oc": oc, "ocp": ocp, "flip": flip, "zp_s": int(zp_s),
           "w_bytes": wp.reshape(-1).tolist(), "b_words": b2.tolist(), "uses_bias": False}
    if conv:
        g = conv_geometry(node, graph)
        ctx["g"] = g
        ctx["scratch_bytes"] = kp
        ctx["summary"] = (f"im2col of {k} int8 per pixel, {ROWS} output channels per pass of "
                          f"{kp // LANES} VMLADAVA.S8 steps")
    else:
        ctx["summary"] = f"{ROWS} rows per pass of {kp // LANES} VMLADAVA.S8 steps"
    rq = node.attrs.get("requant")
    ctx.update(_requant_ctx(rq, ocp))
    ctx.update(_residual_ctx(node, graph))
    if node.attrs.get("residual"):
        ctx["summary"] += ", fused residual add"
    return Selection("mve_gemm" if conv else "mve_dense", "ops_mve/gemm.c.j2", ctx=ctx,
                     weight_bytes=ocp * kp + 4 * ocp)
