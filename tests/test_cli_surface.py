"""The command line's surface (issue 14): --json on every command, closed pipes, --target from
--board, progress only on a terminal, third-party noise filtered, the text report's columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgekit import progress
from edgekit.api import resolve_target
from edgekit.errors import TargetError

EDGEKIT = [sys.executable, "-m", "edgekit"]


def run(*args, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kw)


# ---------------------------------------------------------------------------------------
# --target from --board
# ---------------------------------------------------------------------------------------
def test_the_board_fixes_the_target():
    assert resolve_target(None, "mps2-an386") == "cortex-m4"
    assert resolve_target(None, "nucleo-l552ze-q") == "cortex-m33"
    assert resolve_target(None, "pynq-z2") == "fpga"
    assert resolve_target("cortex-m4", "nucleo-l4r5zi") == "cortex-m4"  # an explicit matching one is kept
    assert resolve_target("fpga", "zcu104") == "fpga"
    with pytest.raises(TargetError, match=r"board 'mps2-an386' has a cortex-m4, not a cortex-m7; use --target "
                                          r"cortex-m4 \(or leave --target out\)"):
        resolve_target("cortex-m7", "mps2-an386")
    with pytest.raises(TargetError, match=r"board 'pynq-z2' is an FPGA board; use --target fpga"):
        resolve_target("cortex-m4", "pynq-z2")
    with pytest.raises(TargetError, match=r"unknown board 'nope'; Cortex-M boards: .*mps2-an386.*; FPGA boards: "
                                          r".*pynq-z2"):
        resolve_target(None, "nope")
    with pytest.raises(TargetError, match="give --board"):
        resolve_target(None, None)


def test_build_without_target(pow2_onnx, tmp_path):
    proc = run("build", pow2_onnx, "--board", "mps2-an386", "-o", tmp_path / "b", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the JSON document on stdout
    assert doc["manifest"]["target"] == "cortex-m4" and doc["build_dir"] == str(tmp_path / "b")
    bad = run("build", pow2_onnx, "--board", "mps2-an386", "--target", "cortex-m7", "-o", tmp_path / "c")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error: board 'mps2-an386' has a cortex-m4, not a cortex-m7")
    over = run("build", pow2_onnx, "--board", "mps2-an386", "--allow-overfit", "-o", tmp_path / "d")
    assert over.returncode == 2 and over.stderr.startswith("error: --allow-overfit applies to --target fpga only")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_build_help_says_what_it_accepts():
    out = run("build", "--help").stdout
    assert "QONNX" in out and ".tflite" in out and "--allow-overfit" in out
    assert "the board fixes" in " ".join(out.split())  # --target is optional


# ---------------------------------------------------------------------------------------
# --json: one document on stdout, nothing else there
# ---------------------------------------------------------------------------------------
def test_json_on_the_commands_of_a_build(pow2_build, tmp_path):
    for args in (["report", pow2_build], ["export", pow2_build, "-o", tmp_path / "p"], ["targets"],
                 ["flash", pow2_build, "--count", "4"]):
        proc = run(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        json.loads(proc.stdout)  # the whole of stdout is one JSON document
    flashed = json.loads(run("flash", pow2_build, "--count", "4", "--json").stdout)
    assert flashed["ok"] is True and flashed["vectors"] == 4 and flashed["mismatches"] == 0
    exported = json.loads(run("export", pow2_build, "-o", tmp_path / "p", "--json").stdout)
    assert exported["output"] == str(tmp_path / "p") and (tmp_path / "p" / "Makefile").is_file()


def test_every_command_offers_json():
    from edgekit.cli import make_parser

    sub = make_parser()._subparsers._group_actions[0].choices
    lacking = [name for name, p in sub.items() if not any("--json" in a.option_strings for a in p._actions)]
    assert not lacking, f"commands without --json: {lacking}"


# ---------------------------------------------------------------------------------------
# A closed pipe ends quietly
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["targets"], ["targets", "--json"]], ids=["targets", "targets-json"])
def test_closed_pipe_is_quiet(args):
    """`edgekit targets | head -0`: the reader is gone before edgekit writes."""
    proc = subprocess.Popen([*EDGEKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert code in (0, 141), (code, err)
    assert err == "", err  # no traceback, no "internal error", no "Exception ignored"


def test_closed_pipe_after_the_first_line(pow2_build):
    shell = f"{' '.join(EDGEKIT)} report {pow2_build} --json | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300)
    assert proc.stdout == "{\n" and proc.stderr == "", proc.stderr
    assert proc.returncode in (0, 141)


# ---------------------------------------------------------------------------------------
# Progress: on a terminal only, never under --json
# ---------------------------------------------------------------------------------------
def test_progress_only_when_asked_or_on_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("EDGEKIT_PROGRESS", raising=False)
    assert not progress.enabled()  # pytest captures: not a terminal
    assert list(progress.track(range(3), "x")) == [0, 1, 2]
    monkeypatch.setenv("EDGEKIT_PROGRESS", "1")
    progress.set_quiet(True)  # --json does not matter when forced (logs, this test)
    try:
        assert progress.enabled()
        with progress.step("long step") as say:
            say("still going")
        assert list(progress.track([1, 2], "outer")) == [1, 2]
        nested = [(a, b) for a in progress.track("ab", "outer") for b in progress.track([1, 2], "inner")]
        assert nested == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]  # one display shared by nested bars
    finally:
        progress.set_quiet(False)
    monkeypatch.setenv("EDGEKIT_PROGRESS", "0")
    assert not progress.enabled()
    assert capsys.readouterr().out == ""  # bars go to stderr only


def test_verify_shows_its_stages_when_forced_and_stays_quiet_under_json(pow2_build):
    shown = run("verify", pow2_build, "--count", "8", "--skip", "qemu", env={"EDGEKIT_PROGRESS": "1"})
    assert shown.returncode == 0 and "verify" in shown.stderr, shown.stderr
    quiet = run("verify", pow2_build, "--count", "8", "--skip", "qemu", "--json")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    json.loads(quiet.stdout)
    # forced bars and --json together: the JSON stays on stdout, whole (the bar must not capture it)
    both = run("verify", pow2_build, "--count", "8", "--skip", "qemu", "--json", env={"EDGEKIT_PROGRESS": "1"})
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["ok"] is True and "{" not in both.stderr


# ---------------------------------------------------------------------------------------
# Third-party noise
# ---------------------------------------------------------------------------------------
def test_brevitas_import_warning_is_filtered_exactly():
    code = ("import warnings; warnings.simplefilter('default'); import edgekit, brevitas.graph.equalize; "
            "warnings.warn('fast_hadamard_transform package not found, using standard pytorch kernels'); "
            "warnings.warn('another warning')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "fast_hadamard_transform" not in proc.stderr, proc.stderr
    assert "another warning" in proc.stderr  # only that message is filtered


# ---------------------------------------------------------------------------------------
# The text report
# ---------------------------------------------------------------------------------------
def test_report_columns_fit_long_op_names_and_name_depthwise(pow2_build):
    from types import SimpleNamespace

    from edgekit.backends.cortexm.report import layer_kind, report_text
    from edgekit.manifest import load_manifest

    assert layer_kind(SimpleNamespace(op="conv2d", attrs={"depthwise": True})) == "depthwise"
    assert layer_kind(SimpleNamespace(op="conv2d", attrs={"depthwise": False})) == "conv2d"
    m = load_manifest(pow2_build)
    m.layers[-1] = dict(m.layers[-1], name="a_layer_name_longer_than_the_column_is", kind="softmax_tflite",
                        input_shape=[1, 2, 3, 4, 5, 6, 7])
    lines = report_text(m).splitlines()
    head, last = lines[1], lines[-1]
    for title, value in (("op", "softmax_tflite"), ("input", "1x2x3x4x5x6x7"),
                         ("layer", "a_layer_name_longer_than_the_column_is")):
        col = head.index(f" {title} ") + 1
        assert last[col:].startswith(value + " "), (title, head, last)  # starts in its column, a space after it
    assert len(lines[2]) == len(head)  # the rule under the head is as long as it


def test_tflite_depthwise_layers_are_called_depthwise(tmp_path):
    from edgekit.api import build, report
    from test_commands_doc import depthwise_tflite

    out = build(depthwise_tflite(tmp_path / "dw.tflite"), None, "mps2-an386", tmp_path / "b").out_dir
    text = report(out).text()
    ops = [line.split()[2] for line in text.splitlines()[3:] if line[:3].strip().isdigit()]
    assert ops == ["conv2d", "depthwise", "reshape", "dense", "softmax_tflite"], text
    page = (out / "report.html").read_text()
    assert '<td class="text">depthwise</td>' in page and '<td class="text">softmax_tflite</td>' in page
