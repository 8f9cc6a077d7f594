"""examples/qonnx_files.py, which makes docs/qonnx-files.md (the ONNX files tried): its cheap rows,
rerun here, and the page listing every file the script tries."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("qonnx_files", ROOT / "examples" / "qonnx_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refused_files_get_their_reason_and_finn_1w1a_verifies(tmp_path):
    pytest.importorskip("brevitas_examples")
    script = _script()
    names = ["float PyTorch export", "bnn_pynq TFC_1W1A"]
    page = tmp_path / "table.md"
    assert script.main(["--work", str(tmp_path / "w"), "--only", *names, "--targets", "cortex-m4",
                        "--write", str(page)]) == 0
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert set(results) == set(names)
    float_row, tfc_row = (results[n]["cortex-m4"] for n in names)
    assert float_row["status"] == "refused" and "this is a float model" in float_row["reason"]
    # FINN's TFC_1W1A quantizes its (x * 2 - 1) input with a BipolarQuant: the host-side sign quantizer,
    # and every stage exact (it was refused before)
    assert tfc_row["status"] == "verified", tfc_row
    assert all(s["mismatches"] == 0 and s["must_be_exact"] for s in tfc_row["stages"]), tfc_row["stages"]
    assert [s["stage"] for s in tfc_row["stages"]][:2] == ["simulator", "qonnx (float32)"]
    text = page.read_text()
    assert "| float PyTorch export |" in text and "refused: " in text and "verified: " in text


def test_the_page_lists_every_file_the_script_tries(tmp_path):
    page = (ROOT / "docs" / "qonnx-files.md").read_text()
    catalogue = _script().files(tmp_path)  # names only: nothing is made
    missing = [name for name in catalogue if f"| {name} |" not in page]
    assert not missing, f"docs/qonnx-files.md lacks {missing}: rerun examples/qonnx_files.py --write"


def test_bipolar_input_quantizer_is_qonnx_bipolarquant():
    """The host-side quantizer of a BipolarQuant on the float input gives qonnx's codes, including
    at -0.0, +0.0, tiny and huge values, infinities and NaN."""
    import numpy as np
    from qonnx.custom_op.general.bipolar_quant import binary_quant

    from edgekit.ir.contract import input_quantizer

    x = np.array([-0.0, 0.0, 1e-45, -1e-45, 3.5, -3.5, 1e38, -1e38, np.inf, -np.inf, np.nan], np.float32)
    want = binary_quant(x, np.float32(0.5)) / np.float32(0.5)
    got = input_quantizer("bipolar")(x, 0.5, 0, -1, 1)
    np.testing.assert_array_equal(got, want.astype(np.int64))
