"""Tiny Brevitas models, one per operator (or operator pattern), for bit-exactness tests."""
from __future__ import annotations

import brevitas.nn as qnn
import torch
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerChannelFixedPointMSE,
                            Int8WeightPerChannelFloat,
                            Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint)
from torch import nn

A, U, W = Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint


def qconv2d(cin, cout, k, **kw):
    return qnn.QuantConv2d(cin, cout, k, weight_quant=kw.pop("weight_quant", W), bias_quant=Int32Bias,
                           return_quant_tensor=True, **kw)


def qconv1d(cin, cout, k, **kw):
    return qnn.QuantConv1d(cin, cout, k, weight_quant=W, bias_quant=Int32Bias, return_quant_tensor=True, **kw)


def qid(quant=A):
    return qnn.QuantIdentity(act_quant=quant, return_quant_tensor=True)


class Seq(nn.Module):
    """input quantizer -> body -> output quantizer (returns float)."""

    def __init__(self, *body, out_quant=A):
        super().__init__()
        self.inp = qid()
        self.body = nn.Sequential(*body)
        self.out = qnn.QuantIdentity(act_quant=out_quant, return_quant_tensor=False)

    def forward(self, x):
        return self.out(self.body(self.inp(x)))


class Residual(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.inp = qid()
        self.c1 = qconv2d(c, c, 3, padding=1)
        self.r1 = qnn.QuantReLU(act_quant=U, return_quant_tensor=True)
        self.c2 = qconv2d(c, c, 3, padding=1)
        self.q2 = qid()
        self.qs = qid()
        self.out = qnn.QuantReLU(act_quant=U, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        y = self.q2(self.c2(self.r1(self.c1(x))))
        return self.out(self.qs(x).value + y.value)  # different power-of-two scales: exact in int32


class SelfResidual(nn.Module):
    """y = conv(x) + x: the residual is also the convolution's own input (must not go in place)."""

    def __init__(self, c=4):
        super().__init__()
        self.inp = qid()
        self.c0 = qconv2d(3, c, 3, padding=1)
        self.q0 = qid()
        self.c1 = qconv2d(c, c, 3, padding=1)
        self.q1 = qid()
        self.qs = qid()
        self.c2 = qconv2d(c, 2, 1)
        self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

    def forward(self, x):
        x = self.q0(self.c0(self.inp(x)))
        y = self.qs(self.q1(self.c1(x)).value + x.value)
        return self.out(self.c2(y))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qid()
        self.a = qconv2d(3, 4, 1)
        self.b = qconv2d(3, 2, 3, padding=1)
        self.shared = qid()
        self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        cat = torch.cat([self.shared(self.a(x)).value, self.shared(self.b(x)).value], dim=1)
        return self.out(cat)


class Head(nn.Module):
    """conv -> global average pool -> flatten -> linear -> quant -> (softmax) -> quant."""

    def __init__(self, softmax=False, sigmoid=False):
        super().__init__()
        self.inp = qid()
        self.conv = qconv2d(3, 6, 3, padding=1)
        self.r = qnn.QuantReLU(act_quant=U, return_quant_tensor=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.qg = qid()
        self.fc = qnn.QuantLinear(6, 5, weight_quant=W, bias_quant=Int32Bias, return_quant_tensor=True)
        self.ql = qid()
        self.softmax, self.sigmoid = softmax, sigmoid
        self.out = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint if (softmax or sigmoid) else A,
                                     return_quant_tensor=False)

    def forward(self, x):
        x = self.qg(self.gap(self.r(self.conv(self.inp(x)))))
        x = self.ql(self.fc(torch.flatten(x, 1)))
        if self.softmax:
            x = torch.softmax(x.value, dim=1)
        if self.sigmoid:
            x = torch.sigmoid(x.value)
        return self.out(x)


class TransposeFlatten(nn.Module):
    """conv -> quant -> permute to channels-last (TF-style) -> flatten -> linear."""

    def __init__(self, one_d=False):
        super().__init__()
        self.one_d = one_d
        self.inp = qid()
        self.conv = qconv1d(3, 4, 3) if one_d else qconv2d(3, 4, 3)
        self.q = qid()
        n = 4 * (6 if one_d else 3 * 4)
        self.fc = qnn.QuantLinear(n, 5, weight_quant=W, bias_quant=Int32Bias, return_quant_tensor=True)
        self.q2 = qid()
        self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

    def forward(self, x):
        y = self.q(self.conv(self.inp(x))).value
        y = y.transpose(1, 2) if self.one_d else y.permute(0, 2, 3, 1)
        return self.out(self.fc(self.q2(torch.flatten(y, 1))))


def calibrate(model: nn.Module, shape: tuple, passes: int = 4) -> nn.Module:
    """A few training-mode passes on random data (spread 2) so the activation quantizers get
    their scales; the model comes back in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randn(16, *shape) * 2)
    return model.eval()


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
        "inplace_dw_pw_chain": (lambda: Seq(qconv2d(3, 8, 3, padding=1), qid(), qconv2d(8, 8, 3, padding=1, groups=8),
                                            qid(), qconv2d(8, 6, 1), qid(), qconv2d(6, 6, 5, padding=2, groups=6),
                                            qid(), qconv2d(6, 4, 3, padding=1)), (3, 7, 6), True),
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
