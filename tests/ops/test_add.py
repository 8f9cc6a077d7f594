"""add: residual adds (QONNX Add of two quantized branches, fused into the producing convolution
where the planner proves it safe; TFLite ADD with its 20-bit input shift)."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite

QONNX = [
    QonnxCase.named("residual_add", kernels=ALL_KERNELS),
    QonnxCase.named("residual_of_own_input", kernels=ALL_KERNELS),
]


def _add_model() -> bytes:
    """ADD(x, max pool 3x3/1 SAME of x), RELU6: two inputs of the same scale, an output scale of its
    own; no convolution produces either input, so the ADD stays an add node."""
    A = tflite.ActivationFunctionType
    b = TfliteBuilder()
    x, p = b.act((1, 6, 7, 4), 0.03, -6), b.act((1, 6, 7, 4), 0.03, -6)
    b.op("MAX_POOL_2D", [x], [p], "Pool2DOptions", Padding=tflite.Padding.SAME, StrideW=1, StrideH=1,
         FilterWidth=3, FilterHeight=3, FusedActivationFunction=A.NONE)
    y = b.act((1, 6, 7, 4), 0.047, -20)
    b.op("ADD", [x, p], [y], "AddOptions", FusedActivationFunction=A.RELU6)
    return b.build([x], [y])


TFLITE = [TfliteCase("add_of_input_and_pool_relu6", _add_model, ops=("add",))]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "add", QONNX, TFLITE, {v: f"add has no {v} kernel and no other layer of this model gets one"
                           for v in ("dsp", "helium")}))
def test_add(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, set())
