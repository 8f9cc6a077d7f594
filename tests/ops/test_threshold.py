"""threshold: FINN's MultiThreshold, and a low-bit Quant after a float BatchNorm (and ReLU) on a
dense layer's accumulator, as FINN's networks have it, computed as integer thresholds found with qonnx's own float32
arithmetic: bit-exact with qonnx (power-of-two scales) on the reference, DSP and Helium kernels,
also for channels with a negative BatchNorm gain. Wider quantizers keep folding BatchNorm into
the requantization."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.frontends.qonnx import import_qonnx
from edgekit.frontends.qonnx_writer import GraphBuilder

from helpers.opcheck import check, matrix
from helpers.qonnx_graphs import GraphCase

RNG = np.random.default_rng(31)
W1, W2 = RNG.integers(-3, 4, size=(20, 12)).astype(float), RNG.integers(-3, 4, size=(12, 6)).astype(float)
BN = (np.where(np.arange(12) % 3 == 0, -1, 1) * RNG.uniform(0.2, 2, 12), RNG.uniform(-2, 2, 12),
      RNG.uniform(-3, 3, 12), RNG.uniform(0.5, 4, 12))


def bn_quant(bits: int, relu: bool, signed: bool):
    def make(path):
        b = GraphBuilder(20).q(1.0, 2, narrow=True).dense(W1, 1.0, 3).batchnorm(*BN)
        if relu:
            b.relu()
        return b.q(2.0**-1, bits, signed=signed).dense(W2, 2.0**-2, 4).save(path)
    return make


def multithreshold(out_bias: float, out_scale: float):
    def make(path):  # FINN's streamlined form: thresholds on the accumulator's float value (scale 2^-1 here)
        thresholds = np.sort(RNG.integers(-40, 40, size=(12, 3)) / 4.0, axis=1)  # some exactly on the grid
        b = GraphBuilder(20).q(1.0, 2, narrow=True).dense(W1, 2.0**-1, 3)
        b.multithreshold(thresholds, "INT2" if out_bias else "UINT2", out_scale, out_bias)
        return b.dense(W2, 2.0**-2, 4).save(path)
    return make


CASES = [
    GraphCase("multithreshold_uint2", multithreshold(0.0, 1.0), kernels=("reference",),
              why_not={v: "the kernel variants run in bn_relu_uint3; thresholds have one C kernel"
                       for v in ("dsp", "helium")}),
    GraphCase("multithreshold_scaled_bias", multithreshold(-1.0, 0.5), kernels=("reference",),
              why_not={v: "the kernel variants run in bn_relu_uint3; thresholds have one C kernel"
                       for v in ("dsp", "helium")}),
    GraphCase("bn_relu_uint3", bn_quant(3, True, False)),
    GraphCase("bn_int2", bn_quant(2, False, True), kernels=("reference",),
              why_not={v: "the kernel variants run in bn_relu_uint3; thresholds have one C kernel"
                       for v in ("dsp", "helium")}),
    GraphCase("bn_int4", bn_quant(4, False, True), kernels=("reference",),
              why_not={v: "the kernel variants run in bn_relu_uint3; thresholds have one C kernel"
                       for v in ("dsp", "helium")}),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "threshold", CASES, [], no_tflite="TFLite models carry no float BatchNorm (converters fold it)"))
def test_threshold_bit_exact(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"dense", "threshold"})


def test_wide_quantizer_keeps_the_folded_requantization(tmp_path):
    graph, _ = import_qonnx(bn_quant(8, True, False)(tmp_path / "m.onnx"))
    assert "threshold" not in {n.op for n in graph.nodes}
    assert any("folded with rounding" in why for why in graph.meta["inexact"])


def test_thresholds_are_sorted_and_negative_gains_flip_the_weights(tmp_path):
    graph, _ = import_qonnx(bn_quant(3, True, False)(tmp_path / "m.onnx"))
    node = next(n for n in graph.nodes if n.op == "threshold")
    thresholds = graph.constants[node.inputs[1]]
    assert thresholds.shape == (12, 7) and np.all(np.diff(thresholds, axis=1) >= 0)
    dense = next(n for n in graph.nodes if n.op == "dense")
    flipped = np.where(BN[0] < 0)[0]
    assert np.array_equal(graph.constants[dense.inputs[1]][flipped], -np.round(W1.T[flipped]).astype(int))


def test_multithreshold_with_a_fractional_output_grid_is_refused(tmp_path):
    from edgekit.errors import UnsupportedOpError

    b = GraphBuilder(20).q(1.0, 2, narrow=True).dense(W1, 1.0, 3).multithreshold(np.zeros((12, 1)), "UINT1", 1.0, 0.5)
    with pytest.raises(UnsupportedOpError, match=r"out_bias / out_scale = 0.5 is not an integer"):
        import_qonnx(b.save(tmp_path / "m.onnx"))
