"""Activations: ReLU, ReLU6 and Hardtanh (QONNX Relu, Clip) and TFLite's fused activations (RELU,
RELU6, RELU_N1_TO_1), folded into the clamp of the producing layer's requantization."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.tflite_layers import conv_layer

QONNX = [
    QonnxCase.named("conv_relu", kernels=ALL_KERNELS),
    QonnxCase.named("conv_relu6_clip", kernels=ALL_KERNELS),
    QonnxCase.named("conv_hardtanh_clip", kernels=ALL_KERNELS),
]


def _conv_act_model(seed: int, act: str) -> bytes:
    """conv 3x3 SAME with a fused activation; a coarse input scale so the clamp bites."""
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    x = b.act((1, 7, 8, 3), 0.05, 2)
    y, *_ = conv_layer(b, rng, x, (7, 8, 3), 0.05, 6, 3, act=getattr(tflite.ActivationFunctionType, act), x_rms=45)
    return b.build([x], [y])


TFLITE = [TfliteCase(f"conv_fused_{act.lower()}", lambda act=act: _conv_act_model(30 + i, act), kernels=ALL_KERNELS)
          for i, act in enumerate(("RELU", "RELU6", "RELU_N1_TO_1"))]


@pytest.mark.parametrize("frontend,variant,case", matrix("the activation", QONNX, TFLITE))
def test_activation(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"conv2d"})


def test_activation_ranges_follow_tflite():
    from edgekit.frontends.tflite.params import activation_range

    assert activation_range("NONE", 0.1, 3, "x") == (-128, 127)
    assert activation_range("RELU", 0.1, -128, "x") == (-128, 127)
    assert activation_range("RELU6", 0.05, -128, "x") == (-128, -8)  # 6 / 0.05 = 120 codes above zero
    assert activation_range("RELU6", 0.0234375, -100, "x") == (-100, 127)
    assert activation_range("RELU_N1_TO_1", 0.08, 10, "x") == (-3, 23)  # float32: 1 / 0.08f = 12.50000028
    assert activation_range("RELU_N1_TO_1", 2.0, 10, "x") == (9, 11)  # +-0.5: half away from zero
    assert activation_range("RELU6", 12.0, 0, "x") == (0, 1)  # 0.5 -> 1 (half to even would give 0)
