"""`edgekit validate` (accuracy, confusion matrix, regression errors, the firmware subset) and
builds for real boards verified on the emulated board with the same core."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit.api import build, verify


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("target, board, standin", [("cortex-m4", "nucleo-l4r5zi", "mps2-an386"),
                                                    ("cortex-m33", "nucleo-l552ze-q", "mps2-an505")])
def test_real_board_build_verifies_on_the_emulated_core(pow2_onnx, tmp_path, target, board, standin):
    out = tmp_path / board
    build(pow2_onnx, target, board, out)
    rep = verify(out, count=8)
    assert rep.ok and rep.board == board
    fw = rep.stages[-1]
    assert fw.stage == f"firmware ({standin})" and fw.elements == 8 * 5 and fw.mismatches == 0
    assert f"stand-in for {board}" in fw.note
    assert rep.to_json()["emulated_board"] == standin
    assert f"emulated on {standin}, the same core as {board}" in rep.table()
    # the build's own firmware (linked for the real board) is left as it was
    assert (out / "firmware.elf").is_file() and not list(out.glob("relink*"))


def test_emulated_board_is_its_own_standin(pow2_build):
    rep = verify(pow2_build, count=4)
    assert rep.to_json()["emulated_board"] == "mps2-an386" and "emulated on" not in rep.table()
    assert rep.stages[-1].note == ""
