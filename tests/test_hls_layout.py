"""Input layouts handed to hls4ml, found wrong by `edgekit fuzz --fpga` (seed 700265).

Two ways the C-simulation computed another function than the model while every other stage agreed:
- a 3x3x3 input: the model's (C, H, W) and qonnx's channels-last (H, W, C) shapes are equal, so the
  layout was taken as unchanged and the C-simulation was fed channels-first data;
- a (2, 1, 2) input: channels last it is (1, 2, 2), and hls4ml's RemoveSingleChannelTranspose
  took the height of 1 for a single channel and removed the transpose back to channels first.
"""
from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("hls4ml")

from edgekit.backends.hls.build import build_fpga  # noqa: E402
from edgekit.fuzz import qonnx_gen  # noqa: E402
from edgekit.fuzz.campaign import run_campaign  # noqa: E402

ACT8 = {"bits": 8, "signed": True, "scale": "pow2", "asym": False}
DENSE = {"op": "dense", "out": 3, "bias": True, "w": {"bits": 8, "per_channel": False, "scale": "pow2"},
         "act": ACT8}


def spec(in_ch: int, size: list[int], relu: bool) -> dict:
    layers = ([{"op": "relu", "act": {"bits": 6, "signed": False, "scale": "pow2", "asym": False}}] if relu else [])
    return {"kind": "qonnx", "seed": 700265, "dims": 2, "in_ch": in_ch, "size": size, "input": ACT8,
            "spread": 8.0, "layers": layers + [{"op": "flatten"}, copy.deepcopy(DENSE)]}


CUBE = spec(3, [3, 3], relu=True)          # (C, H, W) = (3, 3, 3): channels last has the same shape
FLAT_HEIGHT = spec(2, [1, 2], relu=False)  # (2, 1, 2): channels last (1, 2, 2) starts with a 1


@pytest.mark.parametrize("case", [CUBE, FLAT_HEIGHT], ids=["3x3x3", "2x1x2"])
def test_the_channels_last_input_is_recorded_and_kept(case, tmp_path):
    onnx_path = qonnx_gen.export(case, tmp_path / "m.onnx")
    build_fpga(onnx_path, "pynq-z2", tmp_path / "b")
    layout = json.loads((tmp_path / "b" / "manifest.json").read_text())["layout"]
    assert layout["input_perm"] == [0, 2, 3, 1], layout  # the C-simulation is fed channels last


def test_a_height_of_one_keeps_the_model_order_in_the_csimulation():
    """The layout was right here; what went wrong was hls4ml dropping the transpose (one C-simulation)."""
    camp = run_campaign(1, fpga=True, vectors=8, specs=[FLAT_HEIGHT])
    assert [c.outcome.status for c in camp.cases] == ["ok"], camp.table()


@pytest.mark.slow
def test_a_cube_is_exact_in_the_csimulation():
    camp = run_campaign(1, fpga=True, vectors=8, specs=[CUBE])
    assert [c.outcome.status for c in camp.cases] == ["ok"], camp.table()
