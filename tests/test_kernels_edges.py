"""The DSP variants for the layers the GEMM handles badly (issue 16): convolutions with 1-4 input channels
(conv2d_fewch, conv2d_fewch_int8), 1x1 convolutions with a fused residual add (conv1x1_add, conv1x1_add_int8:
ResNet-8's shortcuts) and global average pooling (gap_dsp), bit-exact against the reference on random shapes
on the emulated Cortex-M4 and M7.

``verify`` compares the firmware (optimized kernels) and the host build (reference kernels: EK_USE_DSP is 0
there) with the simulator element by element; the manifest must show that the layer got the variant.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.frontends.qonnx_writer import GraphBuilder
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.brevitas_models import U, Seq, qconv2d
from helpers.calibration import calibrate
from helpers.tflite_layers import conv_layer
from helpers.compile_levels import disassembly_at_every_level
from test_kernels_dsp import Chain

BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}


def _build_and_verify(model: Path, target: str, tmp_path: Path, optimize: str = "balanced", seed: int = 0,
                      board: str | None = None):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    out = tmp_path / "b"
    build(model, target, board or BOARDS[target], out, optimize=optimize)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    # the whole code range, extremes included (the 16-bit lane sums' bounds)
    rng = np.random.default_rng(seed)
    codes = rng.integers(t.qmin, t.qmax + 1, (24,) + tuple(t.shape))
    codes[0], codes[1] = t.qmin, t.qmax
    rep = verify(out, codes=codes, stages=("host", "qemu"))
    for s in rep.stages:
        if s.stage.startswith(("host", "firmware")):
            assert s.elements > 0 and s.mismatches == 0, rep.table()
    assert rep.ok, rep.table()
    manifest = json.loads((out / "manifest.json").read_text())
    variants = manifest["kernel_variants"]
    fused = {n for f in manifest["memory_plan"].get("fused", []) for n in (f["producer"], f["consumer"])}
    variants = {n: (f"{v} (row-fused)" if n in fused else v) for n, v in variants.items()}
    return variants, (out / "src" / "model.c").read_text()


# ---------------------------------------------------------------------------------------
# Global average pooling
# ---------------------------------------------------------------------------------------
def gap_model(seed: int, h: int, w: int, c: int) -> bytes:
    """conv 1x1 (int8 map of c channels, zero point in [-100, 100)) -> AVERAGE_POOL_2D over the whole map
    (TFLite's sum of codes, division rounded half away from zero)."""
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    x = b.act((1, h, w, 3), 0.02, int(rng.integers(-60, 60)))
    y, shp, s, zp = conv_layer(b, rng, x, (h, w, 3), 0.02, c, 1, zp_range=100)
    pooled = b.act((1, 1, 1, c), s, zp)  # TFLite's average pool keeps the input's quantization
    b.op("AVERAGE_POOL_2D", [y], [pooled], "Pool2DOptions", Padding=tflite.Padding.VALID, StrideW=w, StrideH=h,
         FilterWidth=w, FilterHeight=h, FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    return b.build([x], [pooled])


#: (seed, h, w, channels): whole groups of 16 channels, a group of fewer words, channels past the last word;
#: odd pixel counts; more than 255 pixels (two chunks of 16-bit lane sums)
GAP_CASES = [(0, 25, 5, 64), (1, 3, 3, 22), (2, 17, 17, 8), (3, 4, 7, 7), (4, 1, 1, 36)]


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("seed,h,w,c", GAP_CASES)
def test_global_average_pool_bit_exact(seed, h, w, c, target, tmp_path):
    model = tmp_path / "gap.tflite"
    model.write_bytes(gap_model(seed, h, w, c))
    variants, src = _build_and_verify(model, target, tmp_path, seed=seed)
    pools = [k for n, k in variants.items() if n.startswith("average_pool")]
    assert pools == ["gap_dsp"], variants
    assert "ops_dsp/gap.c.j2" in src


def qonnx_gap_model(path: Path, c: int, h: int, w: int, out_scale: float) -> Path:
    """uint8 input (C, H, W) -> GlobalAveragePool -> Quant: QONNX's sum of (x - zp) then a division rounded
    half to even (a power-of-two ratio) or a requantization (any other ratio)."""
    g = GraphBuilder(c, input_shape=(c, h, w))
    g.q(0.05, 8, signed=False)
    g.last = g.node("GlobalAveragePool", [g.last])
    g.q(out_scale, 8, signed=True)
    return g.flatten(c).save(path)


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("c,h,w,out_scale", [(20, 6, 5, 0.0125), (9, 16, 17, 0.0371)])
def test_global_average_pool_uint8_qonnx_bit_exact(c, h, w, out_scale, target, tmp_path):
    path = qonnx_gap_model(tmp_path / "gap.onnx", c, h, w, out_scale)
    variants, _ = _build_and_verify(path, target, tmp_path)
    assert "gap_dsp" in variants.values(), variants


# ---------------------------------------------------------------------------------------
# Convolutions with few input channels
# ---------------------------------------------------------------------------------------
def fewch_chain(seed: int, shape, oc, k, stride, padding, per_channel=True, residual=False) -> bytes:
    """conv (the layer under test: ``shape[2]`` <= 4 input channels) -> conv 1x1 -> dense; with ``residual``
    a 1x1 conv to 4 channels first, and the layer under test (4 -> 4) takes a fused residual add of it."""
    rng = np.random.default_rng(seed)
    ch = Chain(rng, shape, zp=int(rng.integers(-60, 60)))
    if residual:
        ch.conv(4, 1)
        trunk = (ch.x, ch.scale, ch.zp)
        ch.conv(4, k, stride=1, padding="SAME").add_to(trunk)
    else:
        ch.conv(oc, k, stride=stride, padding=padding, per_channel=per_channel)
    return ch.conv(5, 1).dense(7).build()


#: (seed, input shape, output channels, kernel, stride, padding, per-channel, fused residual): KWS's 10x4 over
#: one channel at stride 2, RGB 3x3 at strides 1 and 2 (run tails of 1 byte), 2 channels (tails of 2 and 3 bytes:
#: PKHBT/PKHTB), 4 channels (whole words), odd channel counts, VALID windows that leave columns unread, 1x1
FEWCH_CASES = [(0, (21, 10, 1), 8, (10, 4), 2, "SAME", True, False),
               (1, (12, 11, 3), 16, 3, 1, "SAME", True, False),
               (2, (13, 12, 3), 7, 3, 2, "SAME", False, False),
               (3, (9, 10, 2), 6, (3, 5), 2, "VALID", True, False),
               (4, (8, 9, 2), 5, 3, 1, "SAME", True, False),
               (5, (9, 8, 4), 9, 2, 1, "SAME", True, False),
               (6, (7, 9, 1), 4, 1, 1, "SAME", True, False),   # row-fused with the next 1x1 (a ring of rows)
               (8, (7, 9, 1), 4, (1, 3), 2, "SAME", True, False),
               (7, (8, 7, 3), 4, 3, 1, "SAME", True, True),
               (9, (9, 8, 1), 6, (2, 5), 1, "SAME", True, False)]   # runs of 5 bytes, an even number of rows


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("optimize", ["size", "balanced", "speed"])
@pytest.mark.parametrize("case", FEWCH_CASES, ids=lambda c: f"s{c[0]}")
def test_few_channel_convolutions_bit_exact(case, optimize, target, tmp_path):
    seed, shape, oc, k, stride, padding, per_channel, residual = case
    model = tmp_path / "fewch.tflite"
    model.write_bytes(fewch_chain(seed, shape, oc, k, stride, padding, per_channel, residual))
    variants, src = _build_and_verify(model, target, tmp_path, optimize, seed)
    # the first layer (or, with the residual, the one after the 1x1) has at most 4 input channels
    first = variants["conv_2d_1" if residual else "conv_2d_0"]
    # row-fused with the next conv (the planner runs it block by block): this kernel over pixel ranges too
    # case 6 covers the ring of output rows; under speed the dense layer's widened input over its own dying
    # bytes makes the unfused plan smaller, so the planner keeps the layers whole there
    assert first.endswith(" (row-fused)") or seed != 6 or optimize == "speed", variants
    first = first.removesuffix(" (row-fused)")
    # runs of 4q + 1 bytes (RGB 3x3: 9, 5x1: 5) share their last bytes' k-pairs two by two (conv2d_fewch.py)
    kh, kw = (k, k) if isinstance(k, int) else k
    assert residual or ("an even run's last byte" in src) == (kw * shape[2] % 4 == 1 and kw * shape[2] > 1 and kh > 1)
    assert first == {"speed": "conv2d_fewch", "balanced": "conv2d_fewch_int8", "size": "conv2d_fewch_int8"}[optimize] or (
        optimize == "balanced" and first == "conv2d_fewch"), variants  # balanced may widen a small layer
    assert "ops_dsp/conv2d_fewch.c.j2" in src
    # int8 weights: the stream widened to int16 pairs in RAM per call (every case here is within WIDEN_MAX_BYTES)
    assert first != "conv2d_fewch_int8" or "widened to the int16 pairs" in src


@pytest.mark.parametrize("target", sorted(BOARDS))
def test_few_channel_convolution_uint8_qonnx_bit_exact(target, tmp_path):
    """uint8 input after a ReLU (UXTAB16, zero point 0), QONNX single rounding (the reference requantization
    in the epilogue), 4 input channels at stride 2."""
    import torch

    from edgekit.qat import export_qonnx

    torch.manual_seed(5)
    relu = lambda: __import__("brevitas.nn", fromlist=["QuantReLU"]).QuantReLU(act_quant=U, return_quant_tensor=True)  # noqa: E731
    model = Seq(qconv2d(3, 6, 3, padding=1), relu(), qconv2d(6, 4, 1), relu(), qconv2d(4, 5, 3, stride=2, padding=1))
    model = calibrate(model, (3, 9, 8))
    path = export_qonnx(model, torch.zeros(1, 3, 9, 8), tmp_path / "m.onnx")
    variants, _ = _build_and_verify(path, target, tmp_path)
    assert list(variants.values()).count("conv2d_fewch_int8") + list(variants.values()).count("conv2d_fewch") == 2


# ---------------------------------------------------------------------------------------
# 1x1 convolutions with a fused residual add
# ---------------------------------------------------------------------------------------
def shortcut_chain(seed: int, shape, oc, stride, per_channel=True, residual_k=3) -> bytes:
    """A ResNet block's downsampling: x -> conv 3x3 / stride -> a; x -> conv 1x1 / stride (the layer under
    test), + a (fused into the 1x1, random activation) -> conv 1x1 -> dense. ``residual_k`` 1: a's conv is 1x1,
    its scale comparable to the layer's (either of the add's operands may be the one rescaled by 1/2)."""
    rng = np.random.default_rng(seed)
    ch = Chain(rng, shape, zp=int(rng.integers(-60, 60)))
    ch.conv(shape[2], 3)
    x = (ch.x, ch.shape, ch.scale, ch.zp)
    ch.conv(oc, residual_k, stride=stride)
    a = (ch.x, ch.scale, ch.zp)
    ch.x, ch.shape, ch.scale, ch.zp = x
    ch.conv(oc, 1, stride=stride, per_channel=per_channel).add_to(a)
    return ch.conv(5, 1).dense(7).build()


#: (seed, input shape, output channels, stride, per-channel): ResNet-8's 16 -> 32 at stride 2, 4 and 8 channels,
#: odd output channels, more k-pairs than the full unroll takes (96 channels), stride 1, a per-tensor multiplier
SHORTCUT_CASES = [(0, (8, 8, 16), 32, 2, True), (1, (7, 9, 4), 5, 2, True), (2, (6, 5, 8), 9, 1, True),
                  (3, (5, 6, 96), 8, 2, True), (4, (9, 7, 12), 6, 2, False)]


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("optimize", ["balanced", "speed"])
@pytest.mark.parametrize("case", SHORTCUT_CASES, ids=lambda c: f"s{c[0]}")
def test_shortcut_convolutions_with_fused_add_bit_exact(case, optimize, target, tmp_path):
    seed, shape, oc, stride, per_channel = case
    model = tmp_path / "shortcut.tflite"
    model.write_bytes(shortcut_chain(seed, shape, oc, stride, per_channel))
    variants, src = _build_and_verify(model, target, tmp_path, optimize, seed)
    taken = [v for v in variants.values() if v.startswith("conv1x1_add")]
    assert len(taken) == 1, variants
    assert taken[0] == "conv1x1_add" or optimize == "balanced", variants
    assert "ops_dsp/conv1x1_add.c.j2" in src


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("optimize", ["balanced", "speed"])
@pytest.mark.parametrize("seed,shifted", [(5, "conv"), (12, "conv"), (6, "residual")])
def test_shortcut_epilogue_in_assembly_bit_exact(seed, shifted, optimize, target, tmp_path):
    """The assembly epilogue with either of the add's operands the shifted code (the other from its table): the
    residual (ResNet-8's case), or the conv's own code, with (seed 5: a fused ReLU on the conv, compares inside
    the saturation) and without a clamp of its own (seed 12)."""
    model = tmp_path / "shortcut.tflite"
    model.write_bytes(shortcut_chain(seed, (6, 6, 8), 6, 2, True, residual_k=1))
    variants, src = _build_and_verify(model, target, tmp_path, optimize, seed)
    assert any(v.startswith("conv1x1_add") for v in variants.values()), variants
    assert "the epilogue in assembly" in src
    assert ("this conv's is its code" if shifted == "conv" else "the residual's is its code") in src
    assert ("_tb[256]" in src) == (shifted == "conv") and ("_ta[256]" in src) == (shifted == "residual")


@pytest.mark.parametrize("target", sorted(BOARDS))
def test_shortcut_with_uint8_residual_qonnx_bit_exact(target, tmp_path):
    """QONNX (power-of-two scales, single rounding): a 1x1 convolution over a ReLU's uint8 output plus that
    output (the residual is uint8, its table indexed by the byte as it is)."""
    import brevitas.nn as qnn
    import torch
    from torch import nn

    from edgekit.qat import export_qonnx
    from helpers.brevitas_models import A, qid

    class ShortcutAdd(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qid()
            self.c0 = qconv2d(3, 8, 3, padding=1)
            self.r0 = qnn.QuantReLU(act_quant=U, return_quant_tensor=True)
            self.c1 = qconv2d(8, 8, 1, stride=2)
            self.q1 = qid()
            self.pool = nn.MaxPool2d(1, stride=2)
            self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

        def forward(self, x):
            a = self.r0(self.c0(self.inp(x)))
            return self.out(self.q1(self.c1(a)).value + self.pool(a.value))

    torch.manual_seed(7)
    model = calibrate(ShortcutAdd(), (3, 10, 9))
    path = export_qonnx(model, torch.zeros(1, 3, 10, 9), tmp_path / "m.onnx")
    variants, _ = _build_and_verify(path, target, tmp_path)
    assert "conv1x1_add_int8" in variants.values() or "conv1x1_add" in variants.values(), variants


# ---------------------------------------------------------------------------------------
# Every optimization level and a frame pointer; the Cortex-M33
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimize", ["balanced", "speed"])
def test_edge_variants_compile_with_any_optimization_and_a_frame_pointer(optimize, tmp_path):
    """All three variants in one model.c (a few-channel first conv, a shortcut with its add, a global average
    pool), compiled as test_kernels_dsp compiles the GEMM's: the micro-kernel's 13 registers leave r7 to a frame
    pointer, -O0 gets the reference kernels."""

    from edgekit.api import build

    model = tmp_path / "m.tflite"
    model.write_bytes(edges_model(3))
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize=optimize)
    variants = set(json.loads((out / "manifest.json").read_text())["kernel_variants"].values())
    assert {"gap_dsp"} < variants and variants & {"conv2d_fewch", "conv2d_fewch_int8"} \
        and variants & {"conv1x1_add", "conv1x1_add_int8"}, variants
    for flags, dis in disassembly_at_every_level(out, tmp_path).items():
        assert ("sxtab16" in dis) == (flags != ("-O0",)), flags


def edges_model(seed: int) -> bytes:
    """RGB 3x3 stride 2 (few channels) -> 3x3 stride 2 and a 1x1 stride 2 shortcut with the add -> global
    average pool."""
    rng = np.random.default_rng(seed)
    ch = Chain(rng, (16, 14, 3), zp=int(rng.integers(-60, 60)))
    ch.conv(8, 3, stride=2)
    x = (ch.x, ch.shape, ch.scale, ch.zp)
    ch.conv(16, 3, stride=2)
    a = (ch.x, ch.scale, ch.zp)
    ch.x, ch.shape, ch.scale, ch.zp = x
    ch.conv(16, 1, stride=2).add_to(a)
    h, w, c = ch.shape
    pooled = ch.b.act((1, 1, 1, c), ch.scale, ch.zp)
    ch.b.op("AVERAGE_POOL_2D", [ch.x], [pooled], "Pool2DOptions", Padding=tflite.Padding.VALID, StrideW=w,
            StrideH=h, FilterWidth=w, FilterHeight=h, FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    return ch.b.build([ch.inp], [pooled])


def test_edge_variants_on_the_cortex_m33(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(edges_model(4))
    variants, _ = _build_and_verify(model, "cortex-m33", tmp_path, "speed", 4, board="mps2-an505")
    assert {"gap_dsp", "conv2d_fewch", "conv1x1_add"} <= set(variants.values()), variants


def test_size_keeps_the_gemm_for_shortcuts_without_tables(tmp_path):
    """--optimize size: no 2 KB operand tables; the shortcut keeps the GEMM's int8 layout and epilogue."""
    model = tmp_path / "shortcut.tflite"
    model.write_bytes(shortcut_chain(0, (8, 8, 16), 32, 2))
    variants, src = _build_and_verify(model, "cortex-m4", tmp_path, "size")
    assert not any(v.startswith("conv1x1_add") for v in variants.values()), variants
    assert "_ta[256]" not in src and "_tb[256]" not in src
