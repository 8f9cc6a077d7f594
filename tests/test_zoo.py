"""Model zoo: every architecture compiles, fits mps2-an386 and verifies bit-exactly; MACs match MLPerf Tiny."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekit.api import build, verify
from edgekit.backends.cortexm.memory import io_buffer_bytes
from edgekit.qat import export_qonnx
from edgekit.qat.zoo import MLPERF_REFERENCE, ZOO, calibrate

RESULTS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "mlperf_tiny" / "results.json"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_builds_and_verifies(name, tmp_path):
    torch.manual_seed(0)  # the random weights, not only the calibration data, are seeded
    model = calibrate(ZOO[name]())
    onnx_path = export_qonnx(model, torch.zeros(1, *model.input_shape), tmp_path / f"{name}.onnx")
    res = build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
    rep = verify(tmp_path / "b", count=6)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages if s.must_be_exact), rep.table()
    qonnx = next(s for s in rep.stages if s.stage.startswith("qonnx"))
    # power-of-two models: exact against qonnx too, except the integer softmax (reported, <= 1 LSB)
    has_softmax = any(layer["op"] == "softmax" for layer in res.manifest.layers)
    assert qonnx.must_be_exact != has_softmax and qonnx.max_lsb <= 1
    m = res.manifest
    # the planned RAM is what the firmware really uses: arena written up to its last
    # (word-aligned) byte, and the painted inference stack matches GCC's static frames
    mem = rep.memory
    assert m.arena_bytes - 3 <= mem["arena_touched_bytes"] <= m.arena_bytes
    static = m.memory["inference_stack_static_bytes"]
    assert static - 8 <= mem["inference_stack_bytes"] <= static
    if name in MLPERF_REFERENCE and RESULTS.is_file():
        ref = json.loads(RESULTS.read_text())[MLPERF_REFERENCE[name]]
        assert m.macs == ref["macs"], "layer shapes must match the MLPerf Tiny reference"
        assert m.arena_bytes + io_buffer_bytes(m) <= 0.8 * ref["tflm_cmsis_nn_m4"]["arena_used_bytes"]
