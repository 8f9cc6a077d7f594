"""lut: elementwise functions of one quantized input as a 256-entry table (QONNX Sigmoid, Tanh)."""
from __future__ import annotations

import pytest
from torch import nn

from helpers.brevitas_models import U, Head, Seq
from helpers.opcheck import ALL_KERNELS, QonnxCase, check, matrix

QONNX = [
    QonnxCase("sigmoid", lambda: Seq(nn.Sigmoid(), out_quant=U), (3, 4, 4)),
    QonnxCase("tanh", lambda: Seq(nn.Tanh()), (2, 3, 3)),
    QonnxCase("head_sigmoid", lambda: Head(sigmoid=True), (3, 6, 6), kernels=ALL_KERNELS),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "lut", QONNX, [], {v: f"lut has no {v} kernel and no other layer of this model gets one"
                       for v in ("dsp", "helium")},
    no_tflite="edgekit's TFLite import has no LOGISTIC or TANH lowering (refused by name: "
              "tests/test_tflite.py::test_unsupported_operator_is_named)"))
def test_lut(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"lut"})
