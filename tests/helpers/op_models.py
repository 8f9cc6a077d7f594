"""The QONNX operator models: tiny Brevitas models, one per operator or operator pattern, by name.

``tests/ops/test_<op>.py`` runs each through every kernel variant (``QonnxCase.named``); other
modules reuse them by name (the planner's in-place chain, the sanitizer builds). A new
operator's models may live in its own test module instead.
"""
from __future__ import annotations

import brevitas.nn as qnn
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFixedPointMSE, Int8WeightPerChannelFloat,
                            Int32Bias)
from torch import nn

from .brevitas_models import U, ConcatNet, Head, Residual, SelfResidual, Seq, TransposeFlatten, \
    inplace_dw_pw_chain, qconv1d, qconv2d, qid


def op_models():
    """name -> (model factory, input shape, must be exact vs qonnx)."""
    return {
        "conv2d_3x3_pad": (lambda: Seq(qconv2d(3, 5, 3, padding=1)), (3, 8, 8), True),
        "conv2d_5x5_stride2": (lambda: Seq(qconv2d(3, 4, 5, stride=2, padding=2)), (3, 11, 9), True),
        "conv2d_7x7_valid": (lambda: Seq(qconv2d(2, 3, 7)), (2, 9, 10), True),
        "conv2d_1x1_pointwise": (lambda: Seq(qconv2d(6, 4, 1)), (6, 5, 5), True),
        "conv2d_w4_packed": (lambda: Seq(qconv2d(3, 5, 3, padding=1, weight_bit_width=4)), (3, 6, 6), True),
        "depthwise_w2_packed": (lambda: Seq(qconv2d(3, 3, 3, padding=1, groups=3, weight_bit_width=2)), (3, 6, 6),
                                True),
        "inplace_dw_pw_chain": (inplace_dw_pw_chain, (3, 7, 6), True),
        "conv2d_dilation2": (lambda: Seq(qconv2d(3, 4, 3, dilation=2, padding=2)), (3, 9, 9), True),
        "conv2d_asym_kernel": (lambda: Seq(qconv2d(3, 4, (1, 3), padding=(0, 1))), (3, 6, 7), True),
        "depthwise_3x3": (lambda: Seq(qconv2d(4, 4, 3, padding=1, groups=4)), (4, 7, 7), True),
        "depthwise_mult2_stride2": (lambda: Seq(qconv2d(3, 6, 3, stride=2, padding=1, groups=3)), (3, 8, 8), True),
        "conv1d_k5": (lambda: Seq(qconv1d(3, 4, 5, padding=2)), (3, 20), True),
        "conv1d_stride2_dil": (lambda: Seq(qconv1d(2, 3, 3, stride=2, dilation=2)), (2, 17), True),
        "conv_relu": (lambda: Seq(qconv2d(3, 4, 3), qnn.QuantReLU(act_quant=U, return_quant_tensor=True),
                                  out_quant=U), (3, 6, 6), True),
        "conv_relu6_clip": (lambda: Seq(qconv2d(3, 4, 3), nn.ReLU6(), out_quant=U), (3, 6, 6), True),
        "conv_hardtanh_clip": (lambda: Seq(qconv2d(3, 4, 3), nn.Hardtanh(-0.5, 0.75)), (3, 6, 6), True),
        "conv_batchnorm": (lambda: Seq(qconv2d(3, 4, 3), nn.BatchNorm2d(4),
                                       qnn.QuantReLU(act_quant=U, return_quant_tensor=True), out_quant=U),
                           (3, 6, 6), False),
        "conv_per_channel_pow2": (lambda: Seq(qconv2d(3, 4, 3, weight_quant=Int8WeightPerChannelFixedPointMSE)),
                                  (3, 6, 6), True),
        "dense_per_channel_pow2": (lambda: Seq(nn.Flatten(), qnn.QuantLinear(12, 5, weight_quant=Int8WeightPerChannelFixedPointMSE,
                                                                             bias_quant=Int32Bias, return_quant_tensor=True)),
                                   (3, 2, 2), True),
        "conv_per_channel_float": (lambda: Seq(qconv2d(3, 4, 3, weight_quant=Int8WeightPerChannelFloat),
                                               out_quant=Int8ActPerTensorFloat), (3, 6, 6), False),
        "maxpool_2x2": (lambda: Seq(qconv2d(3, 4, 3, padding=1), qid(), nn.MaxPool2d(2)), (3, 8, 8), True),
        "maxpool_3x3_s2_pad": (lambda: Seq(nn.MaxPool2d(3, stride=2, padding=1)), (3, 9, 9), True),
        "maxpool1d": (lambda: Seq(nn.MaxPool1d(2)), (3, 12), True),
        "avgpool_2x2_quant": (lambda: Seq(nn.AvgPool2d(2)), (3, 8, 8), True),
        "avgpool_3x3_quant": (lambda: Seq(nn.AvgPool2d(3)), (3, 9, 9), True),
        "avgpool1d_quant": (lambda: Seq(nn.AvgPool1d(4)), (3, 16), True),
        "trunc_avgpool_2x2": (lambda: Seq(qnn.TruncAvgPool2d(2, return_quant_tensor=True)), (3, 8, 8), True),
        "trunc_avgpool_3x3": (lambda: Seq(qnn.TruncAvgPool2d(3, return_quant_tensor=True)), (3, 9, 9), False),
        "global_avgpool": (lambda: Seq(nn.AdaptiveAvgPool2d(1)), (4, 5, 5), True),
        "residual_add": (Residual, (4, 6, 6), True),
        "residual_of_own_input": (SelfResidual, (3, 6, 6), True),
        "concat": (ConcatNet, (3, 5, 5), True),
        "sigmoid": (lambda: Seq(nn.Sigmoid(), out_quant=U), (3, 4, 4), True),
        "tanh": (lambda: Seq(nn.Tanh()), (2, 3, 3), True),
        "head_flatten_linear": (Head, (3, 6, 6), True),
        "transpose_flatten_2d": (TransposeFlatten, (3, 5, 6), True),
        "transpose_flatten_1d": (lambda: TransposeFlatten(one_d=True), (3, 8), True),
        "head_softmax": (lambda: Head(softmax=True), (3, 6, 6), False),
        "head_sigmoid": (lambda: Head(sigmoid=True), (3, 6, 6), True),
    }
