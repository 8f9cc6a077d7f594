"""Model zoo: Brevitas definitions of the MLPerf Tiny architectures, a HAR 1D-CNN and a
small 2D CNN for 8x8 digits.

Layer shapes follow the MLPerf Tiny reference models (../shared/peers/mlperf_tiny):
DS-CNN for keyword spotting, ResNet-8 for CIFAR-10, the fully connected autoencoder
for anomaly detection, MobileNetV1 0.25 for visual wake words. BatchNorm layers of the
references are assumed folded into the convolutions (their biases), so every model is
power-of-two quantized and bit-exact end to end. All use the ``int8-pow2`` preset by
default; pass another preset name to change it.
"""
from __future__ import annotations

import brevitas.nn as qnn
import torch
from torch import nn

from .presets import QuantPreset, get_preset


class _Q:
    """Layer factories bound to one quantizer preset."""

    def __init__(self, preset: QuantPreset | str):
        self.p = get_preset(preset) if isinstance(preset, str) else preset

    def inp(self):
        return qnn.QuantIdentity(act_quant=self.p.input_quant, return_quant_tensor=True)

    def act(self):  # signed, e.g. before a residual add or the logits
        return qnn.QuantIdentity(act_quant=self.p.output_quant, return_quant_tensor=True)

    def relu(self, bits: int | None = None):
        """Unsigned activation; ``bits`` overrides the preset's width (same power-of-two scale rule)."""
        if bits is None:
            return qnn.QuantReLU(act_quant=self.p.relu_quant, return_quant_tensor=True)
        return qnn.QuantReLU(act_quant=self.p.relu_quant, bit_width=int(bits), return_quant_tensor=True)

    def conv2d(self, cin, cout, k, stride=1, padding=0, groups=1):
        return qnn.QuantConv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=True,
                               weight_quant=self.p.weight_quant, weight_bit_width=self.p.weight_bit_width,
                               bias_quant=self.p.bias_quant, return_quant_tensor=True)

    def conv1d(self, cin, cout, k, stride=1, padding=0):
        return qnn.QuantConv1d(cin, cout, k, stride=stride, padding=padding, bias=True,
                               weight_quant=self.p.weight_quant, weight_bit_width=self.p.weight_bit_width,
                               bias_quant=self.p.bias_quant, return_quant_tensor=True)

    def linear(self, cin, cout):
        return qnn.QuantLinear(cin, cout, bias=True, weight_quant=self.p.weight_quant,
                               weight_bit_width=self.p.weight_bit_width, bias_quant=self.p.bias_quant,
                               return_quant_tensor=True)

    def softmax_out(self):
        """Quantized probabilities: unsigned 8-bit at scale 2^-8, like TFLite's 1/256."""
        from brevitas.quant import Uint8ActPerTensorFixedPoint

        return qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=False)


class _SoftmaxHead(nn.Module):
    """The MLPerf Tiny classifiers' head: global average pool, fully connected, softmax."""

    def __init__(self, q: "_Q", channels: int, n_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.qpool = q.act()
        self.fc = q.linear(channels, n_classes)
        self.logits = q.act()
        self.out = q.softmax_out()

    def forward(self, x):
        x = self.logits(self.fc(torch.flatten(self.qpool(self.pool(x)), 1)))
        return self.out(torch.softmax(x.value, dim=1))


class DSCNN(nn.Module):
    """Keyword spotting DS-CNN (MLPerf Tiny): 49x10x1 MFCCs -> 12 classes."""

    input_shape = (1, 49, 10)

    def __init__(self, preset="int8-pow2", channels=64, blocks=4, n_classes=12):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        layers = [q.conv2d(1, channels, (10, 4), stride=2, padding=(5, 1)), q.relu()]
        for _ in range(blocks):
            layers += [q.conv2d(channels, channels, 3, padding=1, groups=channels), q.relu(),
                       q.conv2d(channels, channels, 1), q.relu()]
        self.features = nn.Sequential(*layers)
        self.head = _SoftmaxHead(q, channels, n_classes)

    def forward(self, x):
        return self.head(self.features(self.inp(x)))


class _ResBlock(nn.Module):
    def __init__(self, q: _Q, cin, cout, stride):
        super().__init__()
        self.c1 = q.conv2d(cin, cout, 3, stride=stride, padding=1)
        self.r1 = q.relu()
        self.c2 = q.conv2d(cout, cout, 3, padding=1)
        self.q2 = q.act()
        self.short = q.conv2d(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None
        self.qs = q.act()
        self.out = q.relu()

    def forward(self, x):
        y = self.q2(self.c2(self.r1(self.c1(x))))
        s = self.qs(self.short(x) if self.short is not None else x)
        return self.out(y.value + s.value)


class ResNet8(nn.Module):
    """Image classification ResNet-8 (MLPerf Tiny): 32x32x3 -> 10 classes."""

    input_shape = (3, 32, 32)

    def __init__(self, preset="int8-pow2", n_classes=10):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        self.stem = nn.Sequential(q.conv2d(3, 16, 3, padding=1), q.relu())
        self.blocks = nn.Sequential(_ResBlock(q, 16, 16, 1), _ResBlock(q, 16, 32, 2), _ResBlock(q, 32, 64, 2))
        self.head = _SoftmaxHead(q, 64, n_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(self.inp(x))))


class FCAutoencoder(nn.Module):
    """Anomaly detection autoencoder (MLPerf Tiny): 640 -> 128x4 -> 8 -> 128x4 -> 640."""

    input_shape = (640,)

    def __init__(self, preset="int8-pow2", width=128, bottleneck=8, n_in=640):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        dims = [n_in, width, width, width, width, bottleneck, width, width, width, width]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [q.linear(a, b), q.relu()]
        layers.append(q.linear(width, n_in))
        self.body = nn.Sequential(*layers)
        self.out = qnn.QuantIdentity(act_quant=q.p.output_quant, return_quant_tensor=False)

    def forward(self, x):
        return self.out(self.body(self.inp(x)))


class MobileNetV1(nn.Module):
    """Visual wake words MobileNetV1 with width 0.25 (MLPerf Tiny): 96x96x3 -> 2 classes."""

    input_shape = (3, 96, 96)
    # (output channels at width 1.0, stride) of the 13 depthwise-separable blocks
    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
              (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, preset="int8-pow2", width=0.25, n_classes=2):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        c = int(32 * width)
        layers = [q.conv2d(3, c, 3, stride=2, padding=1), q.relu()]
        for cout, stride in self.BLOCKS:
            cout = int(cout * width)
            layers += [q.conv2d(c, c, 3, stride=stride, padding=1, groups=c), q.relu(), q.conv2d(c, cout, 1),
                       q.relu()]
            c = cout
        self.features = nn.Sequential(*layers)
        self.head = _SoftmaxHead(q, c, n_classes)

    def forward(self, x):
        return self.head(self.features(self.inp(x)))


class HarCNN(nn.Module):
    """1D-CNN for HAR windows: (128 samples, 6 channels) -> 6 activities.

    Takes windows as (N, T, C) like ``edgekit.data.load_har``; the transpose to
    channels-first runs before the input quantizer, on the host.
    """

    input_shape = (128, 6)

    def __init__(self, preset="int8-pow2", channels=(16, 32, 32), n_classes=6, n_in=6, act_bits=(None, None, None)):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        c1, c2, c3 = channels
        a1, a2, a3 = act_bits  # per ReLU (None: the preset's width); edgekit mixed-precision --act-bits chooses them
        self.features = nn.Sequential(
            q.conv1d(n_in, c1, 5, padding=2), q.relu(a1), nn.MaxPool1d(2),
            q.conv1d(c1, c2, 5, padding=2), q.relu(a2), nn.MaxPool1d(2),
            q.conv1d(c2, c3, 3, padding=1), q.relu(a3))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.qpool = q.act()
        self.fc = q.linear(c3, n_classes)
        self.out = qnn.QuantIdentity(act_quant=q.p.output_quant, return_quant_tensor=False)

    def forward(self, x):
        x = self.qpool(self.pool(self.features(self.inp(x.transpose(1, 2)))))
        return self.out(self.fc(torch.flatten(x, 1)))


class DigitsCNN(nn.Module):
    """Small 2D CNN for 8x8 grey-level digits (scikit-learn's digits): (N, 8, 8) -> 10 classes.
    Two 3x3 convolutions, 2x2 max pooling, a third convolution, then a dense layer over the
    flattened 4x4 map (a global average would discard where the strokes are)."""

    input_shape = (8, 8)

    def __init__(self, preset="int8-pow2", channels=(8, 16, 16), n_classes=10, act_bits=(None, None, None)):
        super().__init__()
        q = _Q(preset)
        self.inp = q.inp()
        c1, c2, c3 = channels
        a1, a2, a3 = act_bits  # per ReLU (None: the preset's width)
        self.features = nn.Sequential(
            q.conv2d(1, c1, 3, padding=1), q.relu(a1),
            q.conv2d(c1, c2, 3, padding=1), q.relu(a2), nn.MaxPool2d(2),
            q.conv2d(c2, c3, 3, padding=1), q.relu(a3))
        self.fc = q.linear(c3 * 4 * 4, n_classes)
        self.out = qnn.QuantIdentity(act_quant=q.p.output_quant, return_quant_tensor=False)

    def forward(self, x):
        x = self.features(self.inp(x.reshape(-1, 1, 8, 8)))
        return self.out(self.fc(torch.flatten(x, 1)))


ZOO = {
    "ds-cnn": DSCNN,
    "resnet8": ResNet8,
    "fc-autoencoder": FCAutoencoder,
    "mobilenetv1-0.25": MobileNetV1,
    "har-cnn": HarCNN,
    "digits-cnn": DigitsCNN,
}

# Which MLPerf Tiny reference each zoo model mirrors (keys of ../shared/peers/mlperf_tiny/results.json).
MLPERF_REFERENCE = {
    "ds-cnn": "keyword_spotting_ds_cnn",
    "resnet8": "image_classification_resnet8",
    "fc-autoencoder": "anomaly_detection_fc_autoencoder",
}


def calibrate(model: nn.Module, steps: int = 4, batch: int = 8, seed: int = 0) -> nn.Module:
    """Random weights plus a few training-mode passes on random data to set activation scales."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(batch, *model.input_shape))
    return model.eval()
