"""lut: elementwise functions of one quantized input as a 256-entry table (QONNX Sigmoid, Tanh)."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, check, matrix

QONNX = [
    QonnxCase.named("sigmoid"),
    QonnxCase.named("tanh"),
    QonnxCase.named("head_sigmoid", kernels=ALL_KERNELS),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "lut", QONNX, [], {v: f"lut has no {v} kernel and no other layer of this model gets one"
                       for v in ("dsp", "helium")},
    no_tflite="edgekit's TFLite import has no LOGISTIC or TANH lowering (refused by name: "
              "tests/test_tflite.py::test_unsupported_operator_is_named)"))
def test_lut(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"lut"})
