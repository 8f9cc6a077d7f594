"""A low-bit Quant after a float BatchNorm (and ReLU) on a layer's accumulator -> IR ``threshold``.

FINN's binary and low-bit networks (TFC, the UNSW-NB15 MLP, the KWS MLP) put BatchNorm
between the integer layer and a 2- to 4-bit quantizer. The quantizer's output is a monotone
step function of the integer accumulator ``a``: ``q(a) = Quant(Relu(BN(a * s)))``. The
thresholds where it steps are found at build time by bisection over the accumulator's range,
evaluating BatchNorm and ReLU with onnxruntime in float32 and the Quant as qonnx does, so the
result is qonnx's own arithmetic on every accumulator value: exact (where qonnx's float32
MatMul gives ``a * s`` exactly, i.e. power-of-two scales and accumulators below 2^24).
Channels whose BatchNorm gain is negative have the layer's weights and bias negated, so every
channel steps upwards. Used for quantizers of at most ``MAX_THRESHOLD_BITS`` bits and for
BipolarQuant (one threshold, step 2); wider ones fold BatchNorm into the requantization
(``batchnorm.fold_affine``).
"""
from __future__ import annotations

import numpy as np

from ...ir import contract
from ..qonnx_lowering import THRESHOLD_CHAIN, FloatConst, resolves, sign_flipped_layer

MAX_THRESHOLD_BITS = 4


def threshold_candidate(lw, node, consumer_of) -> bool:
    """Does the BatchNorm ``node`` feed (through at most one Relu) a per-tensor Quant of at most 4 bits?"""
    users = consumer_of(node.output[0])
    if len(users) == 1 and users[0].op_type == "Relu":
        users = consumer_of(users[0].output[0])
    if len(users) != 1 or users[0].op_type not in ("Quant", "BipolarQuant"):
        return False
    scale = lw.env.get(users[0].input[1])
    if users[0].op_type == "BipolarQuant":
        return isinstance(scale, FloatConst) and np.asarray(scale.value).size == 1
    bits = lw.env.get(users[0].input[3])
    return (isinstance(bits, FloatConst) and isinstance(scale, FloatConst) and np.asarray(scale.value).size == 1
            and 1 <= float(np.asarray(bits.value).ravel()[0]) <= MAX_THRESHOLD_BITS)


def run_float_chain(lw, nodes, real: np.ndarray) -> np.ndarray:
    """The ONNX nodes (BatchNormalization, Relu) on ``real`` (batch, C[, 1, 1]) with onnxruntime, float32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inits, graph_nodes, src = [], [], "x"
    for i, n in enumerate(nodes):
        inputs = [src]
        for k, name in enumerate(n.input[1:]):
            inits.append(numpy_helper.from_array(np.asarray(lw.env[name].value, np.float32), f"p{i}_{k}"))
            inputs.append(f"p{i}_{k}")
        out = f"y{i}"
        made = helper.make_node(n.op_type, inputs, [out])
        made.attribute.extend(a for a in n.attribute if a.name != "training_mode")
        graph_nodes.append(made)
        src = out
    shape = list(real.shape)
    g = helper.make_graph(graph_nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(src, TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": real.astype(np.float32)})[0]


@resolves(THRESHOLD_CHAIN)
def resolve_thresholds(lw, node, v, out) -> None:
    """The Quant after the chain: its codes are qonnx's rounding of the chain's float32 result."""
    levels = np.arange(out.qmin + 1, out.qmax + 1)
    emit_thresholds(lw, node, v, out, lambda y: contract.quantize(y, out.scale[0], out.zero_point, out.qmin,
                                                                   out.qmax), levels, 1)


def emit_thresholds(lw, node, v, out, quantize, levels: np.ndarray, step: int) -> None:
    """IR ``threshold`` for ``quantize(chain(a * s))``: per channel and level, the least
    accumulator ``a`` whose code reaches the level (bisection; the function is monotone)."""
    float_nodes = v.pending[1]
    t = lw.tensors[v.tensor]
    prod = next(n for n in lw.nodes if t.name in n.outputs)
    bn = float_nodes[0]
    gamma = np.asarray(lw.env[bn.input[1]].value, np.float64)
    sign = np.where(gamma < 0, -1, 1)
    w, b, rows = sign_flipped_layer(lw, prod, sign)
    x = lw.tensors[prod.inputs[0]]
    bound = contract.accumulator_bound(rows, b, x.qmin - x.zero_point, x.qmax - x.zero_point)
    channels = len(bound)
    scale = np.resize(np.asarray(t.scale, np.float64), channels)
    spatial = (1, 1) if len(t.shape) == 3 else ()

    def codes(acc: np.ndarray) -> np.ndarray:
        """q(acc) for acc [C, L] (accumulators of the negated channels as stored)."""
        real = (acc * sign[:, None] * scale[:, None]).astype(np.float32)  # qonnx's MatMul result
        y = run_float_chain(lw, float_nodes, real.T.reshape((acc.shape[1], channels) + spatial))
        y = y.reshape(acc.shape[1], channels).T
        return quantize(y)

    lo = np.repeat(-bound[:, None], len(levels), axis=1)
    hi = np.repeat(bound[:, None] + 1, len(levels), axis=1)  # bound + 1: the level is never reached
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = codes(np.minimum(mid, bound[:, None])) >= levels[None, :]
        reached &= mid <= bound[:, None]
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid + 1)
    lw.constants[prod.inputs[1]] = w.astype(np.int8)
    lw.constants[prod.inputs[2]] = b.astype(np.int32)
    thresholds = np.minimum(lo, contract.INT32_MAX)
    name = lw.add_const(f"{node.name}_thresholds", thresholds, "int32", 32, True, [1.0])
    function = "+".join(n.op_type for n in float_nodes + (node,))
    lw.emit(node, "threshold", [t.name, name], out, out_min=int(out.qmin), step=step, function=function)
    if v.tensor in lw.feature_perm:
        lw.feature_perm[out.name] = lw.feature_perm[v.tensor]
