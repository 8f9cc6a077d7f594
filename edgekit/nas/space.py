"""The search space: small 1D and 2D CNNs with per-layer weight and activation bit widths.

An architecture (:class:`ArchSpec`) is a stack of blocks followed by a head:

* a **block** is either a full convolution or a depthwise-separable pair (depthwise
  k-tap conv + ReLU + pointwise 1x1 conv + ReLU), with a kernel size, a stride, optional
  2x max or average pooling after it, and its own weight and activation bit widths
  (2, 4 or 8);
* the **head** is a global average pool, an optional hidden dense layer with ReLU, and a
  dense layer to the class logits (8-bit weights, int8 logits).

Windows come as ``(N, T, C)`` (time, sensor channels). A **1D** network convolves over
time with the C sensor channels as input channels; a **2D** network sees the window as a
one-channel ``T x C`` image and convolves with ``k x 3`` kernels (``k x 1`` on a width
below 3), striding and pooling over time (and over the sensor axis while it is at least
2 wide). The transpose/reshape to that layout runs on the float input, before the input
quantizer, so edgekit replays it on the host and the firmware takes the window as is.

All quantizers have power-of-two scales (Brevitas ``*FixedPoint`` quantizers with
``bit_width`` overrides): weights of 2/4/8 bits are stored as int8, activations of 2/4/8
bits as uint8/int8, and every rescale is a rounding shift, so each architecture is
bit-exact from Brevitas to the firmware.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

KINDS = ("conv", "dwsep")
POOLS = ("none", "max", "avg")
BITS = (2, 4, 8)


@dataclass(frozen=True)
class Block:
    kind: str = "conv"      # "conv" | "dwsep"
    channels: int = 16      # output channels
    kernel: int = 5         # taps along time
    stride: int = 1         # along time
    pool: str = "none"      # "none" | "max" | "avg": 2x pooling after the block
    w_bits: int = 8
    a_bits: int = 8


@dataclass(frozen=True)
class ArchSpec:
    dims: int                              # 1 or 2
    blocks: tuple[Block, ...]
    input_shape: tuple[int, int]           # (T, C) of one window
    n_classes: int
    head_hidden: int = 0                   # 0: no hidden dense layer
    head_bits: int = 8                     # weight bits of the head's dense layers

    def to_json(self) -> dict:
        d = asdict(self)
        d["blocks"] = [asdict(b) for b in self.blocks]
        d["input_shape"] = list(self.input_shape)
        return d

    @staticmethod
    def from_json(d: dict | str) -> "ArchSpec":
        if isinstance(d, str):
            d = json.loads(d)
        return ArchSpec(int(d["dims"]), tuple(Block(**b) for b in d["blocks"]), tuple(d["input_shape"]),
                        int(d["n_classes"]), int(d.get("head_hidden", 0)), int(d.get("head_bits", 8)))

    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def describe(self) -> str:
        """A one-line summary, e.g. ``1D c16k5s1/max w8a8, ds32k3s2 w4a4, fc6``."""
        parts = []
        for b in self.blocks:
            p = "" if b.pool == "none" else f"/{b.pool}"
            parts.append(f"{'c' if b.kind == 'conv' else 'ds'}{b.channels}k{b.kernel}s{b.stride}{p} "
                         f"w{b.w_bits}a{b.a_bits}")
        head = (f"fc{self.head_hidden}-" if self.head_hidden else "") + f"fc{self.n_classes}"
        return f"{self.dims}D " + ", ".join(parts) + f", {head}"

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(H, W, channels) after each block (H = time; W = 1 in 1D), for quick size checks."""
        t, c = self.input_shape
        h, w, ch = (t, 1, c) if self.dims == 1 else (t, c, 1)
        out = []
        for b in self.blocks:
            k = b.kernel
            h = (h + 2 * (k // 2) - k) // b.stride + 1
            if b.pool != "none":
                h //= 2
                if self.dims == 2 and w >= 2:
                    w //= 2
            ch = b.channels
            out.append((h, w, ch))
        return out

    def valid(self) -> str | None:
        """Why the architecture cannot be built (a map shrinks below one sample), or None."""
        if not self.blocks:
            return "no blocks"
        for i, (h, w, _) in enumerate(self.feature_shapes()):
            if h < 1 or w < 1:
                return f"block {i} shrinks the time axis below one sample"
        return None


# ---------------------------------------------------------------------------------------
# Search-space definition and sampling through optuna
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceConfig:
    """Choices of the search space; every field is a tuple of allowed values."""
    dims: tuple[int, ...] = (1, 2)
    depth: tuple[int, ...] = (1, 2, 3, 4)
    kinds: tuple[str, ...] = KINDS
    channels: tuple[int, ...] = (4, 8, 12, 16, 24, 32, 48, 64)
    kernels: tuple[int, ...] = (3, 5, 7, 9)
    strides: tuple[int, ...] = (1, 2)
    pools: tuple[str, ...] = POOLS
    w_bits: tuple[int, ...] = BITS
    a_bits: tuple[int, ...] = BITS
    head_hidden: tuple[int, ...] = (0, 16, 32)

    def to_json(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_json(d: dict) -> "SpaceConfig":
        return SpaceConfig(**{k: tuple(v) for k, v in d.items()})


def sample(trial, space: SpaceConfig, input_shape: tuple[int, int], n_classes: int) -> ArchSpec:
    """Draw an architecture with optuna's define-by-run API (conditional per-block choices)."""
    dims = trial.suggest_categorical("dims", list(space.dims))
    depth = trial.suggest_categorical("depth", list(space.depth))
    blocks = []
    for i in range(depth):
        kinds = list(space.kinds) if i > 0 else [k for k in space.kinds if k == "conv"] or list(space.kinds)
        blocks.append(Block(
            kind=trial.suggest_categorical(f"b{i}_kind", kinds),
            channels=trial.suggest_categorical(f"b{i}_channels", list(space.channels)),
            kernel=trial.suggest_categorical(f"b{i}_kernel", list(space.kernels)),
            stride=trial.suggest_categorical(f"b{i}_stride", list(space.strides)),
            pool=trial.suggest_categorical(f"b{i}_pool", list(space.pools)),
            w_bits=trial.suggest_categorical(f"b{i}_w_bits", list(space.w_bits)),
            a_bits=trial.suggest_categorical(f"b{i}_a_bits", list(space.a_bits)),
        ))
    hidden = trial.suggest_categorical("head_hidden", list(space.head_hidden))
    return ArchSpec(dims, tuple(blocks), tuple(input_shape), n_classes, hidden)


def random_arch(rng, space: SpaceConfig, input_shape: tuple[int, int], n_classes: int,
                tries: int = 1000, max_macs: int | None = None) -> ArchSpec:
    """A uniformly drawn valid architecture (numpy Generator ``rng``) with at most
    ``max_macs`` MACs: calibration sets."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    for _ in range(tries):
        depth = pick(space.depth)
        blocks = tuple(Block(pick(space.kinds) if i else "conv", pick(space.channels), pick(space.kernels),
                             pick(space.strides), pick(space.pools), pick(space.w_bits), pick(space.a_bits))
                       for i in range(depth))
        a = ArchSpec(pick(space.dims), blocks, tuple(input_shape), n_classes, pick(space.head_hidden))
        if a.valid() is None and (max_macs is None or estimate_macs(a) <= max_macs):
            return a
    raise RuntimeError("no valid architecture drawn")


# ---------------------------------------------------------------------------------------
# Brevitas model
# ---------------------------------------------------------------------------------------
def build_model(arch: ArchSpec):
    """The Brevitas QAT model of ``arch``; takes float windows ``(N, T, C)``."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)
    from torch import nn

    why = arch.valid()
    if why:
        raise ValueError(f"invalid architecture {arch.describe()}: {why}")
    two_d = arch.dims == 2
    conv_cls = qnn.QuantConv2d if two_d else qnn.QuantConv1d

    def conv(cin, cout, k, stride, groups, wbits, width):
        if two_d:
            kw = 3 if width >= 3 else 1
            kernel, pad, st = (k, kw), (k // 2, kw // 2), (stride, 1)
        else:
            kernel, pad, st = k, k // 2, stride
        return conv_cls(cin, cout, kernel, stride=st, padding=pad, groups=groups, bias=True,
                        weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wbits,
                        bias_quant=Int32Bias, return_quant_tensor=True)

    def relu(bits):
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=True)

    def linear(cin, cout, bits):
        return qnn.QuantLinear(cin, cout, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                               weight_bit_width=bits, bias_quant=Int32Bias, return_quant_tensor=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            t, c = arch.input_shape
            self.input_shape = tuple(arch.input_shape)
            self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            layers: list[nn.Module] = []
            cin = c if not two_d else 1
            width = 1 if not two_d else c
            for b in arch.blocks:
                if b.kind == "conv":
                    layers += [conv(cin, b.channels, b.kernel, b.stride, 1, b.w_bits, width), relu(b.a_bits)]
                else:
                    layers += [conv(cin, cin, b.kernel, b.stride, cin, b.w_bits, width), relu(b.a_bits),
                               conv_1x1(cin, b.channels, b.w_bits), relu(b.a_bits)]
                if b.pool != "none":
                    if two_d:
                        size = (2, 2 if width >= 2 else 1)
                        layers.append(nn.MaxPool2d(size) if b.pool == "max" else nn.AvgPool2d(size))
                        width = width // 2 if width >= 2 else width
                    else:
                        layers.append(nn.MaxPool1d(2) if b.pool == "max" else nn.AvgPool1d(2))
                    if b.pool == "avg":  # the average's extra fraction bits: requantize to the block's width
                        layers.append(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=b.a_bits,
                                                        return_quant_tensor=True))
                cin = b.channels
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1) if two_d else nn.AdaptiveAvgPool1d(1)
            self.qpool = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            head: list[nn.Module] = []
            if arch.head_hidden:
                head += [linear(cin, arch.head_hidden, arch.head_bits), relu(8)]
                cin = arch.head_hidden
            head.append(linear(cin, arch.n_classes, arch.head_bits))
            self.head = nn.Sequential(*head)
            self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

        def forward(self, x):
            if two_d:
                x = x.reshape(-1, 1, self.input_shape[0], self.input_shape[1])
            else:
                x = x.transpose(1, 2)
            x = self.qpool(self.pool(self.features(self.inp(x))))
            return self.out(self.head(torch.flatten(x, 1)))

    def conv_1x1(cin, cout, wbits):
        cls = qnn.QuantConv2d if two_d else qnn.QuantConv1d
        return cls(cin, cout, 1, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wbits,
                   bias_quant=Int32Bias, return_quant_tensor=True)

    return Net()


def count_params(arch: ArchSpec) -> int:
    return sum(p.numel() for p in build_model(arch).parameters() if p.requires_grad)


def estimate_macs(arch: ArchSpec) -> int:
    """MACs from the spec alone (the build's manifest has the exact figure)."""
    t, c = arch.input_shape
    h, w, ch = (t, 1, c) if arch.dims == 1 else (t, c, 1)
    kw = lambda w: 3 if (arch.dims == 2 and w >= 3) else 1  # noqa: E731
    macs = 0
    for b in arch.blocks:
        k = kw(w)
        h = (h + 2 * (b.kernel // 2) - b.kernel) // b.stride + 1
        if b.kind == "conv":
            macs += h * w * b.channels * b.kernel * k * ch
        else:
            macs += h * w * ch * b.kernel * k + h * w * ch * b.channels
        ch = b.channels
        if b.pool != "none":
            h //= 2
            if arch.dims == 2 and w >= 2:
                w //= 2
    macs += ch * (arch.head_hidden or arch.n_classes) + (arch.head_hidden * arch.n_classes if arch.head_hidden else 0)
    return macs


__all__ = ["ArchSpec", "Block", "SpaceConfig", "build_model", "count_params", "estimate_macs", "random_arch",
           "sample"]
