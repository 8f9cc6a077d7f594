"""Residual Add of two quantized tensors -> IR ``add`` (int32 sum at a common scale).

Both inputs are brought to the finer scale ``s_c = min(s_a, s_b)``. With power-of-two
scales that is an exact left shift, so ``(a - zp_a) * 2^ka + (b - zp_b) * 2^kb`` is the
exact sum in int32 and the following Quant's requantization matches qonnx bit for bit.
Other scales go through Q31 multipliers with 16 extra fractional bits (reported inexact).
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor
from ..qonnx import IntValue, describe, lowering, lower_add as lower_bias_add


@lowering("Add")
def lower_add(lw, node) -> None:
    vals = [lw.env.get(i) for i in node.input]
    if not all(isinstance(v, IntValue) for v in vals):
        lower_bias_add(lw, node)  # bias add after MatMul
        return
    a, b = (lw.int_input(node, i) for i in (0, 1))
    if a.shape != b.shape:
        raise UnsupportedOpError(f"{describe(node)}: broadcasting add {a.shape} + {b.shape} is not supported")
    if len(a.scale) != 1 or len(b.scale) != 1 or a.dtype == "int32" or b.dtype == "int32":
        raise UnsupportedOpError(f"{describe(node)}: both inputs of a residual add must be quantized "
                                 "activations (put a quantizer on each branch)")
    sa, sb = np.float64(a.scale[0]), np.float64(b.scale[0])
    exact = contract.is_power_of_two(sa / sb)
    s_c = min(sa, sb) if exact else min(sa, sb) / 2**16
    rqs = [contract.make_requant(np.array([s / s_c]), 0, contract.INT32_MIN, contract.INT32_MAX) for s in (sa, sb)]
    ranges = [max(abs(t.qmin - t.zero_point), abs(t.qmax - t.zero_point)) * s / s_c for t, s in ((a, sa), (b, sb))]
    contract.check_accumulator(describe(node), np.array([int(np.ceil(sum(ranges)))]), "sum")
    if not exact:
        lw.inexact.append(f"{describe(node)}: inputs with scales {sa:.4g} and {sb:.4g} (ratio not a power of two)")
    out = Tensor(node.output[0], a.shape, "int32", 32, True, [float(s_c)], 0, contract.INT32_MIN, contract.INT32_MAX)
    lw.emit(node, "add", [a.name, b.name], out, requant=None, in_requant=rqs)
