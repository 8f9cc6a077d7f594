"""The DSP variants for the layers the GEMM handles badly (issue 16): global average pooling (gap_dsp),
bit-exact against the reference on random shapes on the emulated Cortex-M4 and M7.

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
from helpers.tflite_layers import conv_layer

BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}


def _build_and_verify(model: Path, target: str, tmp_path: Path, optimize: str = "balanced", seed: int = 0):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    out = tmp_path / "b"
    build(model, target, BOARDS[target], out, optimize=optimize)
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
    return manifest["kernel_variants"], (out / "src" / "model.c").read_text()


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
