"""Elementwise float functions (Sigmoid, Tanh, ...) between quantizers -> IR ``lut``.

The input has at most 2^8 codes, so the whole function - float op and the following
Quant - is tabulated at build time by running it through onnxruntime itself on every
input code. The table therefore equals qonnx's own float32 computation bit for bit.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ..qonnx_lowering import IntValue, describe, lowering, resolves

FUNCTIONS = ("Sigmoid", "Tanh", "HardSigmoid", "Exp", "Softplus", "Elu", "Selu", "HardSwish")


@lowering(*FUNCTIONS)
def lower_elementwise(lw, node) -> None:
    v = lw.value(node)
    t = lw.tensors[v.tensor]
    if v.pending is not None or t.bits > 8 or t.dtype == "int32":
        raise UnsupportedOpError(f"{describe(node)}: {node.op_type} needs a quantized input of at most 8 bits "
                                 "(put a quantizer before it)")
    lw.env[node.output[0]] = IntValue(v.tensor, ("lookup table", node))


def _run_onnx_function(fn_node, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = helper.make_node(fn_node.op_type, ["x"], ["y"])
    n.attribute.extend(fn_node.attribute)
    g = helper.make_graph([n], "fn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.astype(np.float32)})[0]


@resolves("lookup table")
def resolve_lut(lw, node, v, out) -> None:
    fn_node = v.pending[1]
    t = lw.tensors[v.tensor]
    codes = np.arange(t.qmin, t.qmax + 1)
    real = (codes - t.zero_point).astype(np.float32) * np.float32(t.scale[0])  # qonnx's dequantization
    y = _run_onnx_function(fn_node, real)
    table = contract.quantize(y, out.scale[0], out.zero_point, out.qmin, out.qmax)
    name = lw.add_const(f"{fn_node.name}_table", table, out.dtype, out.bits, out.signed, out.scale)
    lw.emit(fn_node, "lut", [t.name, name], out, offset=int(t.qmin), function=fn_node.op_type)
    lw.env[node.output[0]] = lw.env[out.name] = IntValue(out.name)

