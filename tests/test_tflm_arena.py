"""TFLM's arena measured with the tflite-micro package (bench/tflm_arena.py): the RAM peer of a model
without recorded figures (the VWW stand-in in ``edgekit bench mlperf-tiny``)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.bench.tflm_arena import tflm_arena
from edgekit.frontends.tflite.writer import TfliteBuilder

from helpers.tflite_layers import conv_layer
from helpers.tflm import NOT_INSTALLED, tflm_runtime


def _chain(tmp_path, h: int, channels: list[int]):
    """conv 3x3 layers, one after another, on an h x h x 3 input; returns the file and the activation sizes."""
    rng = np.random.default_rng(h)
    b = TfliteBuilder()
    x = b.act((1, h, h, 3), 0.02, 0)
    first, shape, scale = x, (h, h, 3), 0.02
    sizes = [h * h * 3]
    for c in channels:
        x, shape, scale, _ = conv_layer(b, rng, x, shape, scale, c, 3)
        sizes.append(int(np.prod(shape)))
    path = tmp_path / f"m{h}.tflite"
    path.write_bytes(b.build([first], [x]))
    return path, sizes


def test_arena_parts_and_the_activation_plan(tmp_path):
    if tflm_runtime() is None:
        pytest.skip(NOT_INSTALLED)
    path, sizes = _chain(tmp_path, 16, [8, 16, 4])
    got = tflm_arena(path)
    assert got is not None and got["total"] == got["head"] + got["tail"]
    # the planned activations hold at least each layer's input and output at once, and TFLM's planner
    # needs no more than all activations side by side (plus alignment and the kernels' scratch)
    need = max(a + b for a, b in zip(sizes, sizes[1:]))
    assert need <= got["head"] <= sum(sizes) + 16 * len(sizes) + 4096
    # a larger input grows the planned part by the larger activations, not the persistent records
    bigger = tflm_arena(_chain(tmp_path, 32, [8, 16, 4])[0])
    assert bigger["head"] > got["head"] and bigger["tail"] == got["tail"]


def test_a_file_tflm_cannot_load_gives_none(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    assert tflm_arena(bad) is None
