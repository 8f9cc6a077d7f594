"""Float arithmetic by constants around the integer core (Mul, Div, Sub, Add), as published
FINN / qonnx-zoo files have it: pre-processing before the first quantizer (host-side, float32
as qonnx), BatchNorm exported as Sub/Div/Mul/Add after the last layer (the output's post-ops)
or before a quantizer (folded like BatchNormalization), and an annotated (BIPOLAR) input read
directly by the first layer. Bit-exact qonnx vs simulator vs host C vs QEMU where the contract
says so."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UnsupportedOpError
from edgekit.frontends.qonnx import import_qonnx
from edgekit.frontends.qonnx_writer import GraphBuilder

from helpers.opcheck import check, matrix
from helpers.qonnx_graphs import GraphCase

RNG = np.random.default_rng(12)
W_IN = RNG.integers(-7, 8, size=(12, 6)) * 2.0**-5
BN = [RNG.uniform(-1, 1, 6), RNG.uniform(0.5, 2, 6), RNG.uniform(0.5, 1.5, 6), RNG.uniform(-1, 1, 6)]
ONLY_REFERENCE = {v: "the kernel variants of a dense layer run in the prep_mul_sub case; this case checks "
                     "the lowering" for v in ("dsp", "helium")}


def prep_mul_sub(path):  # FINN's TFC: x * 2 - 1 before a ternary input quantizer
    b = GraphBuilder(12).arith("Mul", 2.0).arith("Sub", [1.0]).q(1.0, 2, narrow=True)
    b.dense(RNG.integers(-1, 2, size=(12, 6)).astype(float), 1.0, 2)
    return b.q(1.0, 8).save(path, declare_domain=False)


def prep_per_channel(path):  # (x - mean[c]) / std[c], then an int8 input quantizer
    b = GraphBuilder(12).arith("Sub", RNG.uniform(-1, 1, 12)).arith("Div", RNG.uniform(0.5, 2, 12))
    return b.q(2.0**-4, 8).dense(W_IN, 2.0**-5, 8).save(path)


def output_bn_decomposed(path):  # the last layer's accumulator through Sub/Div/Mul/Add: output post-ops
    b = GraphBuilder(12).q(2.0**-4, 8).dense(W_IN, 2.0**-5, 8)
    mean, var, gamma, beta = BN
    b.arith("Sub", mean).arith("Div", np.sqrt(var)).arith("Mul", gamma).arith("Add", beta)
    return b.save(path)


def bn_decomposed_before_quant(path):
    b = GraphBuilder(12).q(2.0**-4, 8).dense(W_IN, 2.0**-5, 8)
    mean, var, gamma, beta = BN
    b.arith("Sub", mean).arith("Div", np.sqrt(var)).arith("Mul", gamma).arith("Add", beta)
    return b.q(2.0**-4, 8).save(path)


def annotated_bipolar_input(path):  # the UNSW-NB15 MLP's input: BIPOLAR, (x + 1) / 2, no quantizer
    b = GraphBuilder(12).arith("Add", [1.0]).arith("Div", 2.0).dense(W_IN, 2.0**-5, 8)
    return b.save(path, annotation="BIPOLAR")


CASES = [
    # its dense layer has ternary weights: the bit-packed kernels run it on every core, the M55 included
    GraphCase("prep_mul_sub", prep_mul_sub, kernels=("reference", "dsp"),
              why_not={"helium": "ternary-weight dense layers run the bit-packed binary kernels on the M55 too "
                                 "(tests/test_binary_kernels.py)"}),
    GraphCase("prep_per_channel", prep_per_channel, why_not=ONLY_REFERENCE, kernels=("reference",)),
    GraphCase("output_bn_decomposed", output_bn_decomposed, why_not=ONLY_REFERENCE, kernels=("reference",)),
    GraphCase("bn_decomposed_before_quant", bn_decomposed_before_quant, exact=False, why_not=ONLY_REFERENCE,
              kernels=("reference",)),
    GraphCase("annotated_bipolar_input", annotated_bipolar_input, why_not=ONLY_REFERENCE, kernels=("reference",)),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "float arithmetic", CASES, [], no_tflite="TFLite graphs are integer: float pre-processing is the float "
    "interface's QUANTIZE, covered by tests/test_tflite.py"))
def test_float_arith_bit_exact(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"dense"})


def test_pre_ops_and_post_ops_are_recorded(tmp_path):
    graph, _ = import_qonnx(prep_mul_sub(tmp_path / "a.onnx"))
    assert [op for op, _ in graph.input_quant.pre_ops] == ["mul", "sub"]
    graph, _ = import_qonnx(output_bn_decomposed(tmp_path / "b.onnx"))
    assert [step for step, _ in graph.meta["output_post_ops"]] == ["sub", "div", "mul", "add"]
    assert graph.meta["inexact"] == []
    graph, _ = import_qonnx(annotated_bipolar_input(tmp_path / "c.onnx"))
    iq = graph.input_quant
    assert (iq.annotation, iq.scale, iq.qmin, iq.qmax, iq.signed) == ("BIPOLAR", 1.0, 0, 1, False)


def test_product_of_two_tensors_is_refused(tmp_path):
    b = GraphBuilder(12).q(2.0**-4, 8)
    b.last = b.node("Mul", [b.last, b.last])
    with pytest.raises(UnsupportedOpError, match=r"Mul of two tensors|could not be inferred"):
        import_qonnx(b.q(2.0**-4, 8).save(tmp_path / "m.onnx"))


def test_float_input_without_quantizer_or_annotation_is_refused(tmp_path):
    b = GraphBuilder(12).arith("Add", [1.0]).dense(W_IN, 2.0**-5, 8)
    with pytest.raises(UnsupportedOpError, match=r"without an input quantizer.*annotate the input's integer datatype"):
        import_qonnx(b.save(tmp_path / "m.onnx"))


def test_arithmetic_between_quantizers_is_refused(tmp_path):
    b = GraphBuilder(12).q(2.0**-4, 8).arith("Mul", 3.0)
    with pytest.raises(UnsupportedOpError, match=r"not between quantizers"):
        import_qonnx(b.q(2.0**-4, 8).save(tmp_path / "m.onnx"))
