"""Clip (ReLU6, hard-tanh in float) before a quantizer: folded into the quantizer's clamp.

Rounding is monotone, so ``round(clip(y, a, b) / s) == clip(round(y / s), round(a / s), round(b / s))``:
the clip becomes tighter clamp bounds of the requantization that follows. Exact.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ..qonnx_lowering import IntValue, describe, lowering, resolves


@lowering("Clip")
def lower_clip(lw, node) -> None:
    v = lw.value(node)
    lo = float(np.asarray(lw.const(node, 1, "the minimum")).ravel()[0]) if len(node.input) > 1 and node.input[1] \
        else -np.inf
    hi = float(np.asarray(lw.const(node, 2, "the maximum")).ravel()[0]) if len(node.input) > 2 and node.input[2] \
        else np.inf
    prev = v.pending
    if prev is not None and prev[0] == "clip":
        lo, hi = max(lo, prev[1]), min(hi, prev[2])
    elif prev is not None:
        raise UnsupportedOpError(f"{describe(node)}: Clip after an unquantized {prev[0]}")
    lw.env[node.output[0]] = IntValue(v.tensor, ("clip", lo, hi))


@resolves("clip")
def resolve_clip(lw, node, v, out) -> None:
    """The Quant after a Clip: requantize with the clip folded into lo/hi."""
    _, a, b = v.pending
    t = lw.tensors[v.tensor]
    s, z = out.scale[0], out.zero_point
    lo, hi = out.qmin, out.qmax
    if np.isfinite(a):
        lo = max(lo, int(contract.quantize(np.float32(a), s, z, -2**40, 2**40)))
    if np.isfinite(b):
        hi = min(hi, int(contract.quantize(np.float32(b), s, z, -2**40, 2**40)))
    rq = contract.requant_for_scales(np.asarray(t.scale), s, z, lo, hi)
    lw.emit(node, "requantize", [t.name], out, requant=rq)

