"""softmax: QONNX Softmax between quantizers (softmax, a table of exponentials) and TFLite SOFTMAX
with TFLite Micro's gemmlowp arithmetic (softmax_tflite)."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder

QONNX = [QonnxCase.named("head_softmax", kernels=ALL_KERNELS, ops=("softmax",))]


def _softmax_model(shape: tuple, scale: float, zp: int, beta: float) -> bytes:
    b = TfliteBuilder()
    x, y = b.act((1,) + shape, scale, zp), b.act((1,) + shape, 1 / 256, -128)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    return b.build([x], [y])


TFLITE = [
    TfliteCase("softmax_beta1", lambda: _softmax_model((10,), 0.06, 5, 1.0), ops=("softmax_tflite",)),
    TfliteCase("softmax_rows_beta07", lambda: _softmax_model((2, 6), 0.08, -7, 0.7), ops=("softmax_tflite",)),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "softmax", QONNX, TFLITE, {v: f"softmax has no {v} kernel and no other layer of this model gets one"
                               for v in ("dsp", "helium")}))
def test_softmax(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, set())
