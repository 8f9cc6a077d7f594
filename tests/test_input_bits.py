"""QKeras-style models: the first layer reads the float input, no input quantizer in the graph.

``edgekit build --input-bits N --calibration x.npy`` fixes the input quantizer (power-of-two scale
covering the calibration samples' largest magnitude, signed when any is negative); verify's qonnx
stage is then fed the grid points the input codes stand for, so it stays exact.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgekit.api import build, verify
from edgekit.errors import TargetError, UnsupportedOpError
from edgekit.ir.graph import Graph
from edgekit.qat import export_qonnx
from helpers.brevitas_models import FloatInputMLP
from helpers.calibration import calibrate


@pytest.fixture(scope="module")
def float_input_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = calibrate(FloatInputMLP(), (12,), passes=4, batch=32, spread=1.5)
    return export_qonnx(model, torch.zeros(1, 12), tmp_path_factory.mktemp("qk") / "float_input.onnx")


def _pow2_cover(max_abs: float, qmax: int) -> float:
    scale = 2.0 ** -30
    while max_abs > scale * qmax:
        scale *= 2
    return scale


def test_without_input_bits_the_error_names_both_options(float_input_onnx, tmp_path):
    with pytest.raises(UnsupportedOpError, match=r"reads the float input without an input quantizer.*"
                                                 r"--input-bits N --calibration x\.npy"):
        build(float_input_onnx, "cortex-m4", "mps2-an386", tmp_path / "a")
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(float_input_onnx), "--board", "mps2-an386",
                           "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: node '") and "Traceback" not in proc.stderr
    assert "--input-bits N --calibration x.npy" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(float_input_onnx), "--board", "mps2-an386",
                           "--input-bits", "8", "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --input-bits needs --calibration x.npy"), \
        proc.stderr
    np.save(tmp_path / "bad.npy", np.zeros((4, 7), np.float32))
    with pytest.raises(UnsupportedOpError, match=r"bad\.npy: --calibration has shape \(4, 7\); give \(N, 12\)"):
        build(float_input_onnx, "cortex-m4", "mps2-an386", tmp_path / "d", input_bits=8,
              calibration=tmp_path / "bad.npy")
    with pytest.raises(TargetError, match="from 1 to 16"):
        build(float_input_onnx, "cortex-m4", "mps2-an386", tmp_path / "e", input_bits=0,
              calibration=np.ones((2, 12)))
    assert not any((tmp_path / d).exists() for d in "abcde")


def test_a_model_with_its_own_input_quantizer_refuses_input_bits(tmp_path):
    torch.manual_seed(1)
    model = calibrate(FloatInputMLP(quantize_input=True), (12,), passes=2, batch=16, spread=1.5)
    onnx = export_qonnx(model, torch.zeros(1, 12), tmp_path / "q.onnx")
    with pytest.raises(UnsupportedOpError, match="quantizes its input itself, so leave them out"):
        build(onnx, "cortex-m4", "mps2-an386", tmp_path / "a", input_bits=8, calibration=np.ones((2, 12)))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_calibrated_input_builds_and_qonnx_stays_exact(float_input_onnx, signed, tmp_path):
    rng = np.random.default_rng(3)
    cal = rng.standard_normal((64, 12)).astype(np.float32) * 1.5
    if not signed:
        cal = np.abs(cal)
    np.save(tmp_path / "cal.npy", cal)
    bits = 8 if signed else 6
    out = tmp_path / "b"
    build(float_input_onnx, "cortex-m4", "mps2-an386", out, input_bits=bits, calibration=tmp_path / "cal.npy")
    iq = Graph.load(out).input_quant
    qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    assert (iq.signed, iq.bits, iq.qmax, iq.qmin) == (signed, bits, qmax, -qmax - 1 if signed else 0)
    assert iq.scale == _pow2_cover(float(np.abs(cal).max()), qmax)
    assert iq.annotation == f"--input-bits {bits}"
    rep = verify(out, inputs=cal[:32] * 1.25, seed=1)  # beyond the calibration range too: saturation
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("qonnx", "host", "firmware"):
        assert stages[stage].must_be_exact and stages[stage].elements == 32 * 5, rep.table()
        assert stages[stage].mismatches == 0, rep.table()
    assert rep.ok, rep.table()


@pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C-simulation needs g++")
def test_calibrated_input_on_fpga_csim_is_exact(float_input_onnx, tmp_path):
    pytest.importorskip("hls4ml")
    cal = np.random.default_rng(4).standard_normal((32, 12)).astype(np.float32)
    out = tmp_path / "f"
    build(float_input_onnx, "fpga", "pynq-z2", out, input_bits=8, calibration=cal)
    rep = verify(out, count=48, seed=2)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("qonnx", "hls4ml"):
        assert stages[stage].must_be_exact and stages[stage].elements == 48 * 5, rep.table()
        assert stages[stage].mismatches == 0, rep.table()
