"""conv2d: full, pointwise, depthwise and 1D convolutions (QONNX Conv, BatchNormalization folded
into it; TFLite CONV_2D and DEPTHWISE_CONV_2D), every stage bit-exact with every kernel variant.

DSP kernels: im2col GEMM, depthwise 3x3 (dw3), depthwise any shape (dwk); Helium: GEMM, and depthwise
with a depth multiplier of 1 and TFLite's double rounding (mve_dw; other depthwise layers keep the DSP
kernel on the M55).
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.tflite_layers import conv_layer

DW = ("reference", "dsp")
NO_DW_HELIUM = {"helium": "the Helium depthwise kernel takes TFLite's double rounding and a depth multiplier "
                          "of 1 only: on the M55 this layer keeps the DSP kernel (dw3/dwk), which the dsp variant runs"}

QONNX = [
    QonnxCase.named("conv2d_3x3_pad", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_5x5_stride2", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_7x7_valid", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_1x1_pointwise", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_w4_packed", kernels=ALL_KERNELS),
    QonnxCase.named("depthwise_w2_packed", kernels=DW, why_not=NO_DW_HELIUM),
    QonnxCase.named("inplace_dw_pw_chain", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_dilation2", kernels=ALL_KERNELS),
    QonnxCase.named("conv2d_asym_kernel", kernels=ALL_KERNELS),
    QonnxCase.named("depthwise_3x3", kernels=DW, why_not=NO_DW_HELIUM),
    QonnxCase.named("depthwise_mult2_stride2", kernels=DW, why_not=NO_DW_HELIUM),
    QonnxCase.named("conv1d_k5", kernels=ALL_KERNELS),
    QonnxCase.named("conv1d_stride2_dil", kernels=ALL_KERNELS),
    QonnxCase.named("conv_batchnorm", kernels=ALL_KERNELS),
    QonnxCase.named("conv_per_channel_pow2", kernels=ALL_KERNELS),
    QonnxCase.named("conv_per_channel_float", kernels=ALL_KERNELS),
]


def _conv_model(seed: int, shape: tuple, **conv) -> bytes:
    """One convolution of an int8 input (scale 0.02, zero point 7) with random weights."""
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    x = b.act((1,) + shape, 0.02, 7)
    y, *_ = conv_layer(b, rng, x, shape, 0.02, x_rms=45, **conv)
    return b.build([x], [y])


A = tflite.ActivationFunctionType
TFLITE = [
    TfliteCase("conv_3x3_same_relu6", lambda: _conv_model(10, (9, 11, 3), oc=8, k=3, act=A.RELU6),
               kernels=ALL_KERNELS),
    TfliteCase("conv_3x3_s2_valid_per_tensor", lambda: _conv_model(11, (10, 9, 4), oc=6, k=3, stride=2,
                                                                   padding="VALID", per_channel=False),
               kernels=ALL_KERNELS),
    TfliteCase("conv_3x3_dilation2", lambda: _conv_model(12, (11, 10, 3), oc=5, k=3, dilation=2, act=A.RELU),
               kernels=ALL_KERNELS),
    TfliteCase("conv_1x1", lambda: _conv_model(13, (6, 7, 8), oc=6, k=1), kernels=ALL_KERNELS),
    TfliteCase("depthwise_3x3_relu", lambda: _conv_model(14, (8, 8, 6), oc=0, k=3, depthwise=True, act=A.RELU),
               kernels=ALL_KERNELS),
    TfliteCase("depthwise_mult2_s2", lambda: _conv_model(15, (9, 9, 3), oc=0, k=3, stride=2, depthwise=True, mult=2),
               kernels=DW, why_not=NO_DW_HELIUM),
    TfliteCase("depthwise_5x5_valid", lambda: _conv_model(16, (9, 10, 4), oc=0, k=5, padding="VALID",
                                                          depthwise=True),
               kernels=ALL_KERNELS),
]


@pytest.mark.parametrize("frontend,variant,case", matrix("conv2d", QONNX, TFLITE))
def test_conv2d(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"conv2d"})
