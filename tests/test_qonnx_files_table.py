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


def test_refused_files_get_their_reason_in_the_table(tmp_path):
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
    # FINN's TFC_1W1A quantizes its (x * 2 - 1) input with a BipolarQuant: refused, naming the node
    assert tfc_row["status"] == "refused" and "BipolarQuant on the float input" in tfc_row["reason"]
    text = page.read_text()
    assert "| float PyTorch export |" in text and "refused: " in text and "not run" in text


def test_the_page_lists_every_file_the_script_tries(tmp_path):
    page = (ROOT / "docs" / "qonnx-files.md").read_text()
    catalogue = _script().files(tmp_path)  # names only: nothing is made
    missing = [name for name in catalogue if f"| {name} |" not in page]
    assert not missing, f"docs/qonnx-files.md lacks {missing}: rerun examples/qonnx_files.py --write"
