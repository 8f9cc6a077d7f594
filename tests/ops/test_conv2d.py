"""conv2d: full, pointwise, depthwise and 1D convolutions (QONNX Conv, BatchNormalization folded
into it; TFLite CONV_2D and DEPTHWISE_CONV_2D), every stage bit-exact with every kernel variant.

DSP kernels: im2col GEMM, depthwise 3x3 (dw3), depthwise any shape (dwk); Helium: GEMM (depthwise
layers keep the DSP kernel on the M55).
"""
from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFixedPointMSE, Int8WeightPerChannelFloat
from torch import nn

from helpers.brevitas_models import U, Seq, inplace_dw_pw_chain, qconv1d, qconv2d
from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from helpers.tflite_builder import TfliteBuilder, tflite
from helpers.tflite_layers import conv_layer

DW = ("reference", "dsp")
NO_DW_HELIUM = {"helium": "depthwise convolutions have no Helium kernel: on the M55 they keep the DSP kernel "
                          "(dw3/dwk), which the dsp variant runs"}

QONNX = [
    QonnxCase("conv2d_3x3_pad", lambda: Seq(qconv2d(3, 5, 3, padding=1)), (3, 8, 8), kernels=ALL_KERNELS),
    QonnxCase("conv2d_5x5_stride2", lambda: Seq(qconv2d(3, 4, 5, stride=2, padding=2)), (3, 11, 9),
              kernels=ALL_KERNELS),
    QonnxCase("conv2d_7x7_valid", lambda: Seq(qconv2d(2, 3, 7)), (2, 9, 10), kernels=ALL_KERNELS),
    QonnxCase("conv2d_1x1_pointwise", lambda: Seq(qconv2d(6, 4, 1)), (6, 5, 5), kernels=ALL_KERNELS),
    QonnxCase("conv2d_w4_packed", lambda: Seq(qconv2d(3, 5, 3, padding=1, weight_bit_width=4)), (3, 6, 6),
              kernels=ALL_KERNELS),
    QonnxCase("depthwise_w2_packed", lambda: Seq(qconv2d(3, 3, 3, padding=1, groups=3, weight_bit_width=2)),
              (3, 6, 6), kernels=DW, why_not=NO_DW_HELIUM),
    QonnxCase("inplace_dw_pw_chain", inplace_dw_pw_chain, (3, 7, 6), kernels=ALL_KERNELS),
    QonnxCase("conv2d_dilation2", lambda: Seq(qconv2d(3, 4, 3, dilation=2, padding=2)), (3, 9, 9),
              kernels=ALL_KERNELS),
    QonnxCase("conv2d_asym_kernel", lambda: Seq(qconv2d(3, 4, (1, 3), padding=(0, 1))), (3, 6, 7),
              kernels=ALL_KERNELS),
    QonnxCase("depthwise_3x3", lambda: Seq(qconv2d(4, 4, 3, padding=1, groups=4)), (4, 7, 7), kernels=DW,
              why_not=NO_DW_HELIUM),
    QonnxCase("depthwise_mult2_stride2", lambda: Seq(qconv2d(3, 6, 3, stride=2, padding=1, groups=3)), (3, 8, 8),
              kernels=DW, why_not=NO_DW_HELIUM),
    QonnxCase("conv1d_k5", lambda: Seq(qconv1d(3, 4, 5, padding=2)), (3, 20), kernels=ALL_KERNELS),
    QonnxCase("conv1d_stride2_dil", lambda: Seq(qconv1d(2, 3, 3, stride=2, dilation=2)), (2, 17),
              kernels=ALL_KERNELS),
    QonnxCase("conv_batchnorm", lambda: Seq(qconv2d(3, 4, 3), nn.BatchNorm2d(4),
                                            qnn.QuantReLU(act_quant=U, return_quant_tensor=True), out_quant=U),
              (3, 6, 6), exact=False, kernels=ALL_KERNELS),
    QonnxCase("conv_per_channel_pow2", lambda: Seq(qconv2d(3, 4, 3, weight_quant=Int8WeightPerChannelFixedPointMSE)),
              (3, 6, 6), kernels=ALL_KERNELS),
    QonnxCase("conv_per_channel_float", lambda: Seq(qconv2d(3, 4, 3, weight_quant=Int8WeightPerChannelFloat),
                                                    out_quant=Int8ActPerTensorFloat),
              (3, 6, 6), exact=False, kernels=ALL_KERNELS),
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
               kernels=DW, why_not=NO_DW_HELIUM),
    TfliteCase("depthwise_mult2_s2", lambda: _conv_model(15, (9, 9, 3), oc=0, k=3, stride=2, depthwise=True, mult=2),
               kernels=DW, why_not=NO_DW_HELIUM),
    TfliteCase("depthwise_5x5_valid", lambda: _conv_model(16, (9, 10, 4), oc=0, k=5, padding="VALID",
                                                          depthwise=True),
               kernels=DW, why_not=NO_DW_HELIUM),
]


@pytest.mark.parametrize("frontend,variant,case", matrix("conv2d", QONNX, TFLITE))
def test_conv2d(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"conv2d"})
