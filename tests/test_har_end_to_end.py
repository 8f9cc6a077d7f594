"""The issue's acceptance path on real data: QAT on HAR windows, export, build, verify 256 test windows."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgekit.data import load_har
from edgekit.qat import QuantMLP, evaluate, export_qonnx, train


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["int8-pow2", "int8-pow2-pc", "int8-float"])
def test_har_qat_to_verified_firmware(preset, tmp_path):
    data = load_har()
    model = QuantMLP(data.x_train.shape[1:], (32,), len(data.class_names), preset)
    sub = np.random.default_rng(0).permutation(len(data.x_train))[:3000]
    train(model, data.x_train[sub], data.y_train[sub], epochs=2, progress=False)
    acc = evaluate(model, data.x_test, data.y_test)
    assert acc > 0.6, acc  # six classes: chance is ~0.17

    onnx_path = export_qonnx(model, torch.as_tensor(data.x_test[:1]), tmp_path / "har.onnx")
    np.save(tmp_path / "x.npy", data.x_test[:256])
    run = lambda *a: subprocess.run([sys.executable, "-m", "edgekit", *a], capture_output=True, text=True)  # noqa
    b = run("build", str(onnx_path), "--target", "cortex-m4", "--board", "mps2-an386", "-o", str(tmp_path / "out"))
    assert b.returncode == 0, b.stderr
    v = run("verify", str(tmp_path / "out"), "--inputs", str(tmp_path / "x.npy"), "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    rep = json.loads(v.stdout)
    assert rep["vectors"] == 256 and rep["ok"]
    by_stage = {s["stage"]: s for s in rep["stages"]}
    assert by_stage["host C"]["mismatches"] == 0
    assert by_stage["firmware (mps2-an386)"]["mismatches"] == 0
    if preset.startswith("int8-pow2"):  # power-of-two scales, per tensor or per channel: qonnx exact too
        assert by_stage["qonnx (float32)"]["must_be_exact"] and by_stage["qonnx (float32)"]["mismatches"] == 0
    else:
        assert by_stage["qonnx (float32)"]["max_lsb"] <= 1
    assert rep["memory"]["flash_bytes"] > rep["memory"]["rodata_bytes"] > 768 * 32
