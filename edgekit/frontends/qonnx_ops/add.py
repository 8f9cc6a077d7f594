"""ONNX Add, both of its uses: a residual add of two quantized tensors -> IR ``add``, or the
bias add after a bias-less MatMul -> folded into the dense layer's bias.

Residual add: an int32 sum at a common scale. Both inputs are brought to the finer scale ``s_c = min(s_a, s_b)``. With power-of-two
scales that is an exact left shift, so ``(a - zp_a) * 2^ka + (b - zp_b) * 2^kb`` is the
exact sum in int32 and the following Quant's requantization matches qonnx bit for bit.
Other scales go through Q31 multipliers with 16 extra fractional bits (reported inexact).
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor
from ..qonnx_lowering import FloatConst, IntValue, QuantConst, bias_codes, describe, lowering
from .elementwise import is_float_arith, lower_float_arith


@lowering("Add")
def lower_add(lw, node) -> None:
    if is_float_arith(lw, node):  # on the float input, or continuing a float affine map
        lower_float_arith(lw, node)
    elif all(isinstance(lw.env.get(i), IntValue) for i in node.input):
        lower_residual_add(lw, node)
    else:
        lower_bias_add(lw, node)


def lower_residual_add(lw, node) -> None:
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


def lower_bias_add(lw, node) -> None:
    """The bias add that follows a bias-less MatMul: folded into the dense layer's bias."""
    acc_name = next((i for i in node.input if isinstance(lw.env.get(i), IntValue)), None)
    other = next((i for i in node.input if i != acc_name), None)
    if acc_name is None or not isinstance(lw.env.get(other), (QuantConst, FloatConst)):
        raise UnsupportedOpError(f"{describe(node)}: only a bias add after MatMul is supported")
    t = lw.tensors[lw.env[acc_name].tensor]
    prod = next((n for n in lw.nodes if t.name in n.outputs), None)
    consumers = [n for n in lw.model.graph.node if acc_name in n.input]
    if prod is None or prod.op != "dense" or len(consumers) != 1 or np.any(lw.constants[prod.inputs[2]]):
        raise UnsupportedOpError(f"{describe(node)}: only a bias add directly after a bias-less MatMul")
    x = lw.tensors[prod.inputs[0]]
    w_codes = lw.constants[prod.inputs[1]].astype(np.int64)
    bias = bias_codes(lw, node, other, np.asarray(t.scale, np.float64))
    folded = bias - x.zero_point * w_codes.sum(axis=1)
    contract.check_accumulator(describe(node), contract.accumulator_bound(w_codes, folded, x.qmin, x.qmax))
    lw.constants[prod.inputs[2]] = folded.astype(np.int32)
    lw.env[node.output[0]] = IntValue(t.name)
