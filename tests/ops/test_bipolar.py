"""BipolarQuant and 1-bit Quant: binary weights (-1/+1 codes in int8, packed two bits each) and binary
activations (the sign of a layer's accumulator, an exact requantization), as FINN's binary
networks (TFC_1W1A-style) and the UNSW-NB15 MLP's output have them. Bit-exact qonnx vs
simulator vs host C vs QEMU on the reference, DSP and Helium kernels."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.frontends.qonnx import import_qonnx
from edgekit.frontends.qonnx_writer import GraphBuilder

from helpers.opcheck import check, matrix
from helpers.qonnx_graphs import GraphCase

RNG = np.random.default_rng(7)
W1, W2 = RNG.normal(size=(24, 16)), RNG.normal(size=(16, 8))


def binary_weights(path):  # 1-bit weights x int8 activations
    return GraphBuilder(24).q(2.0**-4, 8).dense(W1, 2.0**-3).q(2.0**-4, 8).save(path)


def binary_1w1a(path):  # 1-bit weights and activations, a binary output (TFC_1W1A-style)
    b = GraphBuilder(24).q(2.0**-4, 8).dense(W1, 1.0).sign().dense(W2, 1.0).sign(0.5)
    return b.save(path, declare_domain=False)


def binary_1w2a(path):  # 1-bit weights, 2-bit activations
    b = GraphBuilder(24).q(1.0, 2, narrow=True).dense(W1, 1.0).q(1.0, 2, narrow=True).dense(W2, 1.0)
    return b.save(path)


def bn_sign_1w1a(path):  # FINN's TFC_1W1A: BatchNormalization then BipolarQuant -> one exact threshold per channel
    gamma = np.where(np.arange(16) % 4 == 0, -1, 1) * RNG.uniform(0.2, 2, 16)
    b = GraphBuilder(24).q(1.0, 2, narrow=True).dense(W1, 1.0)
    b.batchnorm(gamma, RNG.uniform(-1, 1, 16), RNG.uniform(-2, 2, 16), RNG.uniform(0.5, 3, 16))
    return b.sign().dense(W2, 1.0).sign().save(path)


def quant_1bit(path):  # 1-bit Quant: signed weights (-1/+1, as qonnx executes them), unsigned activations {0, 1}
    b = GraphBuilder(24).q(2.0**-3, 8).dense(W1, 2.0**-2, 1, narrow=False).q(1.0, 1, signed=False)
    return b.dense(W2, 1.0, 1, narrow=False).save(path)


def bn_quant_1bit(path):  # BatchNormalization then an unsigned 1-bit Quant: one threshold per channel
    b = GraphBuilder(24).q(1.0, 2, narrow=True).dense(W1, 1.0)
    b.batchnorm(RNG.uniform(-2, 2, 16), RNG.uniform(-1, 1, 16), RNG.uniform(-2, 2, 16), RNG.uniform(0.5, 3, 16))
    return b.q(1.0, 1, signed=False).dense(W2, 1.0).save(path)


def conv_bn_sign(path):  # a CNV-style binary conv layer: Conv, BatchNormalization, BipolarQuant, per channel
    wc = RNG.normal(size=(5, 3, 3, 3))
    gamma = np.array([1.0, -0.5, 2.0, -1.5, 0.7])
    b = GraphBuilder(3 * 6 * 6, input_shape=(3, 6, 6)).q(2.0**-4, 8).conv(wc, 1.0)
    b.batchnorm(gamma, RNG.uniform(-1, 1, 5), RNG.uniform(-2, 2, 5), RNG.uniform(0.5, 3, 5))
    return b.sign().flatten(5 * 4 * 4).dense(RNG.normal(size=(80, 6)), 1.0).save(path)


def sign_after_bn(path):  # BatchNorm as Sub/Div/Mul/Add, then BipolarQuant: folded with rounding
    b = GraphBuilder(24).q(2.0**-4, 8).dense(W1, 1.0)
    b.arith("Sub", RNG.uniform(-2, 2, 16)).arith("Div", RNG.uniform(0.5, 2, 16)).arith("Add", RNG.uniform(-1, 1, 16))
    return b.sign().dense(W2, 1.0).save(path)


# Dense layers with binary weights and int8/2-bit inputs run the bit-packed binary kernels (kernels/binary.py)
# on every core, the Cortex-M55 included, ahead of the Helium ones: tests/test_binary_kernels.py runs them
# there. 1W1A layers have Helium kernels of their own (kernels/mve_xnor.py): their cases run on the M55 too.
BINARY_ON_M55 = {"helium": "binary-weight dense layers run the bit-packed binary kernels on the M55 too "
                           "(tests/test_binary_kernels.py)"}
CASES = [
    GraphCase("binary_weights", binary_weights, kernels=("reference", "dsp"), why_not=BINARY_ON_M55),
    GraphCase("binary_1w1a", binary_1w1a),
    GraphCase("binary_1w2a", binary_1w2a, kernels=("reference", "dsp"), why_not=BINARY_ON_M55),
    GraphCase("bn_sign_1w1a", bn_sign_1w1a, ops=("dense", "threshold")),
    GraphCase("quant_1bit", quant_1bit, kernels=("reference", "dsp"), why_not=BINARY_ON_M55),
    GraphCase("conv_bn_sign", conv_bn_sign, ops=("conv2d", "threshold", "dense")),
    GraphCase("bn_quant_1bit", bn_quant_1bit, ops=("dense", "threshold"), kernels=("reference",),
              why_not={v: "the kernel variants run in bn_sign_1w1a; thresholds have one C kernel"
                       for v in ("dsp", "helium")}),
    GraphCase("sign_after_bn", sign_after_bn, exact=False, kernels=("reference",),
              why_not={v: "the kernel variants run in the other cases; this one checks the folding"
                       for v in ("dsp", "helium")}),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "BipolarQuant", CASES, [], no_tflite="TFLite has no binary quantizer"))
def test_bipolar_bit_exact(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"dense"})


def test_binary_codes_and_storage(tmp_path):
    """Binary weights are -1/+1 codes in the IR (2-bit signed for the reference kernel's packing); the
    binary kernels store them at 1 bit each (tests/test_binary_kernels.py)."""
    graph, _ = import_qonnx(binary_1w1a(tmp_path / "m.onnx"))
    weights = [graph.constants[n.inputs[1]] for n in graph.nodes if n.op == "dense"]
    assert all(set(np.unique(w).tolist()) == {-1, 1} for w in weights)
    assert all(graph.tensors[n.inputs[1]].bits == 2 for n in graph.nodes if n.op == "dense")  # packed 4 per byte
    out = graph.tensors[graph.outputs[0]]
    assert (out.qmin, out.qmax, out.scale) == (-1, 1, [0.5])


def test_bipolar_on_the_float_input_is_the_host_side_sign(tmp_path):
    """FINN's 1W1A networks quantize the float input with a BipolarQuant: the input quantizer is the
    sign (contract.quantize_bipolar), and the model computes what qonnx computes."""
    from edgekit.sim import quantize_input, simulate
    from edgekit.stages import qonnx_output_codes, run_qonnx

    path = GraphBuilder(24).sign().dense(W1, 1.0).save(tmp_path / "m.onnx")
    graph, _ = import_qonnx(path)
    iq = graph.input_quant
    assert (iq.rounding, iq.qmin, iq.qmax, iq.zero_point) == ("bipolar", -1, 1, 0)
    x = np.random.default_rng(5).normal(size=(64, 24)).astype(np.float32)
    x[0], x[1], x[2, :3] = 0.0, -0.0, [np.inf, -np.inf, np.nan]
    codes = quantize_input(graph, x)
    assert set(np.unique(codes).tolist()) == {-1, 1}
    np.testing.assert_array_equal(codes.reshape(64, -1), np.where(x >= 0, 1, -1))
    got = simulate(graph, codes)[graph.outputs[0]].reshape(64, -1)
    want = qonnx_output_codes(graph, run_qonnx(path, np.nan_to_num(x[3:], nan=-1.0)))
    np.testing.assert_array_equal(got[3:], want)


def test_signed_one_bit_quant_is_bipolar(tmp_path):
    """qonnx executes a signed 1-bit Quant as a BipolarQuant (-1/+1), whatever its narrow flag."""
    graph, _ = import_qonnx(quant_1bit(tmp_path / "m.onnx"))
    weights = [graph.constants[n.inputs[1]] for n in graph.nodes if n.op == "dense"]
    assert all(set(np.unique(w).tolist()) == {-1, 1} for w in weights)
