"""Brevitas building blocks for test models (quantized convolutions, identities, a sequential
wrapper with input and output quantizers, residual/concat/head patterns) and the QuantMLP
fixtures."""
from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import torch
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8BiasPerTensorFixedPointInternalScaling,
                            Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint)
from torch import nn

from edgekit.qat import QuantMLP, export_qonnx

from .calibration import calibrate

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


def inplace_dw_pw_chain() -> nn.Module:
    """conv 3x3 -> depthwise 3x3 -> pointwise 8->6 -> depthwise 5x5 -> conv 3x3 on a 7x6 map: the
    planner runs the depthwise and pointwise layers in place (input shape (3, 7, 6))."""
    return Seq(qconv2d(3, 8, 3, padding=1), qid(), qconv2d(8, 8, 3, padding=1, groups=8), qid(), qconv2d(8, 6, 1),
               qid(), qconv2d(6, 6, 5, padding=2, groups=6), qid(), qconv2d(6, 4, 3, padding=1))


def make_mlp(preset: str, input_shape=(4, 3), hidden=(16, 8), n_out=5, seed: int = 0) -> QuantMLP:
    """A QuantMLP with random weights and activation scales calibrated on random data."""
    torch.manual_seed(seed)
    return calibrate(QuantMLP(input_shape, hidden, n_out, preset), input_shape, passes=8, batch=64, spread=1.5)


def export_mlp(path: Path, preset: str, **kw) -> Path:
    model = make_mlp(preset, **kw)
    shape = kw.get("input_shape", (4, 3))
    return export_qonnx(model, torch.zeros(1, *shape), path)


class FloatInputMLP(nn.Module):
    """12 -> 16 -> 5; the first layer has no input quantizer and a bias with its own (coarser) scale,
    as ``qonnx.converters.from_keras`` writes QKeras models."""

    def __init__(self, quantize_input: bool = False):
        super().__init__()
        w = Int8WeightPerTensorFixedPoint
        self.inp = qid() if quantize_input else nn.Identity()
        self.fc1 = qnn.QuantLinear(12, 16, weight_quant=w, bias_quant=Int8BiasPerTensorFixedPointInternalScaling,
                                   input_quant=None, return_quant_tensor=False)
        self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(16, 5, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        return self.out(self.fc2(self.relu(self.fc1(self.inp(x)))))
