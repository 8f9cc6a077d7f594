"""Bad input gets one clear ``error:`` line, exit 2, no traceback and no output left behind.

Every case drives the real command line (``python -m edgekit``) in a subprocess, the way a
user meets these errors. "Nothing left behind" means the parent of ``-o`` holds exactly
what it held before: no output directory and no hidden ``.<name>.tmp-*`` staging directory.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from edgekit.errors import ContractError
from edgekit.ir import contract

EDGEKIT = [sys.executable, "-m", "edgekit"]
TARGET = ["--target", "cortex-m4", "--board", "mps2-an386"]
TOOL_VARS = ("EDGEKIT_ARM_GCC", "EDGEKIT_ARM_SIZE", "EDGEKIT_HOST_CC", "EDGEKIT_QEMU")
# Names in the exported pow2 MLP (edgekit.qat.QuantMLP through Brevitas' QONNX exporter).
FIRST_GEMM = "/layers/layers.0/Gemm"
FIRST_W_QUANT = "/layers/layers.0/weight_quant/export_handler/Quant"
FIRST_B_QUANT = "/layers/layers.0/bias_quant/export_handler/Quant"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def run_cli(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 180):
    full_env = {k: v for k, v in os.environ.items() if k not in TOOL_VARS}
    full_env.update(env or {})
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """One ``error:`` line on stderr naming every needle, exit 2, no traceback, nothing on stdout."""
    everything = proc.stdout + proc.stderr
    assert "Traceback" not in everything, everything
    assert proc.returncode == 2, f"exit {proc.returncode}\n{everything}"
    assert proc.stdout == "", everything
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    assert proc.stderr.lstrip().startswith("error:"), proc.stderr  # nothing before the message
    line = error_lines[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def listing(d: Path) -> list[str]:
    """Every entry under ``d``, hidden ones included."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def snapshot(d: Path) -> dict[str, tuple]:
    """Path -> (kind, content hash, mtime) for everything under ``d``."""
    snap = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        snap[str(p.relative_to(d))] = ("file" if p.is_file() else "dir", digest, st.st_mtime_ns, st.st_mode)
    return snap


@pytest.fixture
def work(tmp_path) -> Path:
    """An empty parent for ``-o``; after a failed build it must still be empty."""
    d = tmp_path / "work"
    d.mkdir()
    return d


def build_fails(model: Path, work: Path, *extra, env=None, out_name: str = "out"):
    """Run a build into ``work/out`` that must fail and leave ``work`` exactly as it was."""
    before = listing(work)
    proc = run_cli("build", model, *extra, "-o", work / out_name, env=env)
    assert listing(work) == before, f"left behind: {set(listing(work)) - set(before)}\n{proc.stderr}"
    return proc


# ---------------------------------------------------------------------------------------
# bad model files
# ---------------------------------------------------------------------------------------
def _float_model(path: Path, good: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5)).eval()
    torch.onnx.export(net, torch.zeros(1, 12), str(path), dynamo=False)
    return path


def _with_op(op_type: str, node_name: str):
    def make(path: Path, good: Path) -> Path:
        m = onnx.load(str(good))
        out = m.graph.output[0].name
        for n in m.graph.node:  # the old producer of the graph output now feeds the new node
            for i, o in enumerate(n.output):
                if o == out:
                    n.output[i] = "before_" + node_name
        attrs = {"axis": -1} if op_type == "Softmax" else {}
        m.graph.node.append(helper.make_node(op_type, ["before_" + node_name], [out], name=node_name, **attrs))
        onnx.checker.check_model(m)  # a valid ONNX model: only the op is the problem
        onnx.save(m, str(path))
        return path
    return make


def _truncated(path: Path, good: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _random_bytes(path: Path, good: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _text(path: Path, good: Path) -> Path:
    path.write_text("this is not an ONNX model\n" * 20)
    return path


def _empty(path: Path, good: Path) -> Path:
    path.write_bytes(b"")
    return path


def _overflow(path: Path, good: Path) -> Path:
    """The pow2 MLP with the first layer's weight scale cut to 2**-30 (and its bias scale to match).

    Every weight code saturates at +-127/-128 and every bias code at the int32 limit, so
    |bias| + sum |w| * |x| exceeds 2**31 - 1 in the first Gemm. The other layers keep
    their own (shared) scale initializers.
    """
    m = onnx.load(str(good))
    x_scale = next(numpy_helper.to_array(i) for i in m.graph.initializer
                   if i.name == "/input_quant/act_quant/export_handler/Constant_output_0")
    m.graph.initializer.append(numpy_helper.from_array(np.array(2.0**-30, np.float32), "ovf_w_scale"))
    m.graph.initializer.append(numpy_helper.from_array(
        np.array([float(x_scale) * 2.0**-30], np.float32), "ovf_b_scale"))
    found = set()
    for n in m.graph.node:
        if n.name == FIRST_W_QUANT:
            n.input[1] = "ovf_w_scale"
            found.add(n.name)
        elif n.name == FIRST_B_QUANT:
            n.input[1] = "ovf_b_scale"
            found.add(n.name)
    assert found == {FIRST_W_QUANT, FIRST_B_QUANT}, "the exported model changed its node names"
    assert any(n.name == FIRST_GEMM for n in m.graph.node)
    onnx.save(m, str(path))
    return path


BAD_MODELS = {
    # id: (maker, needles other than the file path, must the message name the file?)
    "float-model": (_float_model, ["float"], True),
    "unsupported-softmax": (_with_op("Softmax", "MySoftmax"), ["MySoftmax", "Softmax"], False),
    "unsupported-sigmoid": (_with_op("Sigmoid", "MySigmoid"), ["MySigmoid", "Sigmoid"], False),
    "truncated": (_truncated, ["truncated"], True),
    "random-bytes": (_random_bytes, [], True),
    "text": (_text, [], True),
    "empty": (_empty, [], True),
    "int32-overflow": (_overflow, [FIRST_GEMM, "int32", "overflow"], False),
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_models")


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model(case, pow2_onnx, bad_dir, work):
    maker, needles, names_file = BAD_MODELS[case]
    model = maker(bad_dir / f"{case}.onnx", pow2_onnx)
    proc = build_fails(model, work, *TARGET)
    assert_user_error(proc, *needles, *([str(model)] if names_file else []))


def test_missing_model_file(tmp_path, work):
    model = tmp_path / "no_such_model.onnx"
    proc = build_fails(model, work, *TARGET)
    assert_user_error(proc, str(model), "no such file")


def test_model_is_a_directory(tmp_path, work):
    model = tmp_path / "a_directory.onnx"
    model.mkdir()
    proc = build_fails(model, work, *TARGET)
    assert_user_error(proc, str(model))


def test_accumulator_check_names_node():
    """The static int32 check itself: the bound 2**31 - 1 passes, one more is refused by name."""
    assert contract.check_accumulator("fc1", np.array([5, contract.INT32_MAX])) == 32
    with pytest.raises(ContractError, match=r"node 'fc1'.*2147483648.*overflow"):
        contract.check_accumulator("node 'fc1'", np.array([5, contract.INT32_MAX + 1]))


# ---------------------------------------------------------------------------------------
# targets and boards
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["--target", "cortex-m99", "--board", "mps2-an386"], ["cortex-m99", "cortex-m4"]),
    (["--target", "cortex-m4", "--board", "nucleo-f999"], ["nucleo-f999", "mps2-an386"]),
    (["--target", "cortex-m4", "--board", "mps2-an385"], ["mps2-an385", "cortex-m3", "cortex-m4"]),
    (["--target", "cortex-m4"], ["--board", "mps2-an386"]),
], ids=["unknown-target", "unknown-board", "board-core-mismatch", "no-board"])
def test_bad_target(args, needles, pow2_onnx, work):
    proc = build_fails(pow2_onnx, work, *args)
    assert_user_error(proc, *needles)


# ---------------------------------------------------------------------------------------
# external tools
# ---------------------------------------------------------------------------------------
INSTALL = "apt-get install"


@pytest.mark.parametrize("var, tool", [
    ("EDGEKIT_ARM_GCC", "/nonexistent/arm-none-eabi-gcc"),
    ("EDGEKIT_ARM_SIZE", "/nonexistent/arm-none-eabi-size"),
    ("EDGEKIT_HOST_CC", "/nonexistent/cc"),
])
def test_missing_build_tool(var, tool, pow2_onnx, work):
    proc = build_fails(pow2_onnx, work, *TARGET, env={var: tool})
    assert_user_error(proc, tool, var, "not found", "make setup")


def test_no_tools_on_path(pow2_onnx, work):
    """PATH holds only the virtual environment: no gcc, no arm-none-eabi-gcc, no qemu."""
    venv_bin = str(Path(sys.executable).parent)
    for tool in ("arm-none-eabi-gcc", "gcc", "qemu-system-arm"):
        if shutil.which(tool, path=venv_bin):
            pytest.skip(f"{tool} is in {venv_bin}")
    proc = build_fails(pow2_onnx, work, *TARGET, env={"PATH": venv_bin})
    assert_user_error(proc, "arm-none-eabi-gcc", "not found", INSTALL, "gcc-arm-none-eabi")


@pytest.fixture
def failing_tool(tmp_path) -> Path:
    """An executable that prints a compiler-like complaint and exits 1."""
    tool = tmp_path / "bin" / "broken-arm-none-eabi-gcc"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'broken-gcc: internal compiler error' >&2\nexit 1\n")
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("out_name", ["out", "new/deeper/out"], ids=["flat", "nested"])
def test_cross_compiler_fails_midway(out_name, failing_tool, pow2_onnx, work):
    """A tool that fails after the staging directory exists: it is removed, and so are the
    parent directories of -o that the build created."""
    env = {"EDGEKIT_ARM_GCC": str(failing_tool), "EDGEKIT_ARM_SIZE": shutil.which("arm-none-eabi-size") or
           "arm-none-eabi-size"}
    proc = build_fails(pow2_onnx, work, *TARGET, env=env, out_name=out_name)
    assert_user_error(proc, "cross-compiling")
    assert str(failing_tool) in proc.stderr and "internal compiler error" in proc.stderr


def test_failed_rebuild_keeps_previous_build(failing_tool, pow2_onnx, work):
    out = work / "out"
    ok = run_cli("build", pow2_onnx, *TARGET, "-o", out)
    assert ok.returncode == 0, ok.stderr
    before_parent, before = listing(work), snapshot(out)
    env = {"EDGEKIT_ARM_GCC": str(failing_tool), "EDGEKIT_ARM_SIZE": shutil.which("arm-none-eabi-size") or
           "arm-none-eabi-size"}
    proc = run_cli("build", pow2_onnx, *TARGET, "-o", out, env=env)
    assert_user_error(proc, "cross-compiling")
    assert snapshot(out) == before
    assert listing(work) == before_parent


# ---------------------------------------------------------------------------------------
# output directory
# ---------------------------------------------------------------------------------------
def test_refuses_foreign_output_dir(pow2_onnx, work):
    out = work / "my_project"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious\n")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    before_parent, before = listing(work), snapshot(out)
    proc = run_cli("build", pow2_onnx, *TARGET, "-o", out)
    assert_user_error(proc, str(out), "not an edgekit build")
    assert snapshot(out) == before
    assert listing(work) == before_parent


def test_refuses_output_that_is_a_file(pow2_onnx, work):
    out = work / "out"
    out.write_text("a file\n")
    proc = run_cli("build", pow2_onnx, *TARGET, "-o", out)
    assert_user_error(proc, str(out), "not a directory")
    assert out.read_text() == "a file\n"
    assert listing(work) == ["out"]


# ---------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(pow2_onnx, tmp_path_factory) -> Path:
    """A fresh CLI build of the pow2 MLP owned by this module (verify cases must not touch it)."""
    out = tmp_path_factory.mktemp("errors_build") / "pow2"
    proc = run_cli("build", pow2_onnx, *TARGET, "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_verify_missing_qemu(built):
    before = snapshot(built)
    proc = run_cli("verify", built, env={"EDGEKIT_QEMU": "/nonexistent/qemu-system-arm"})
    assert_user_error(proc, "/nonexistent/qemu-system-arm", "EDGEKIT_QEMU", "not found", INSTALL)
    assert snapshot(built) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign"])
def test_verify_not_a_build_dir(kind, tmp_path):
    d = tmp_path / "not_a_build"
    if kind != "missing":
        d.mkdir()
    if kind == "foreign":
        (d / "firmware.elf").write_bytes(b"\x7fELF")
    proc = run_cli("verify", d)
    assert_user_error(proc, str(d), "not an edgekit build")
    if kind == "missing":
        assert not d.exists()  # verify creates nothing
    else:
        assert listing(d) == (["firmware.elf"] if kind == "foreign" else [])


def test_verify_corrupt_manifest(built, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(built, d, symlinks=True)
    (d / "manifest.json").write_text('{"target": "cortex-m4", ')
    proc = run_cli("verify", d, "--skip", "qemu")
    assert_user_error(proc, str(d / "manifest.json"), "manifest")


def test_verify_incomplete_build_dir(built, tmp_path):
    """A build directory whose host runner was deleted: an error naming it, not a traceback."""
    d = tmp_path / "copy"
    shutil.copytree(built, d, symlinks=True)
    (d / "host" / "ek_host_runner").unlink()
    proc = run_cli("verify", d, "--skip", "qemu", "--skip", "qonnx")
    assert_user_error(proc, "ek_host_runner")


@pytest.mark.parametrize("shape", [(3, 5), (12,), (2, 4, 4)], ids=str)
def test_verify_inputs_wrong_shape(shape, built, tmp_path):
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.zeros(shape, np.float32))
    before = snapshot(built)
    proc = run_cli("verify", built, "--inputs", inputs)
    assert_user_error(proc, str(tuple(shape)), "4, 3")  # the shape given and the one expected
    assert snapshot(built) == before


@pytest.mark.parametrize("kind", ["missing", "not-npy", "empty", "truncated", "npz", "pickle", "directory"])
@pytest.mark.parametrize("option", ["--inputs", "--codes"])
def test_verify_unreadable_inputs(kind, option, built, tmp_path):
    """Every file that is not one plain .npy array is one error line naming it (an empty file
    was an internal EOFError; an .npz archive reached the shape check as an NpzFile)."""
    inputs = tmp_path / "inputs.npy"
    if kind == "not-npy":
        inputs.write_text("1, 2, 3\n")
    elif kind == "empty":
        inputs.write_bytes(b"")
    elif kind == "truncated":
        np.save(inputs, np.zeros((4, 4, 3), np.int8))
        inputs.write_bytes(inputs.read_bytes()[:-7])
    elif kind == "npz":
        with open(inputs, "wb") as f:
            np.savez(f, x=np.zeros((4, 4, 3), np.int8))
    elif kind == "pickle":
        np.save(inputs, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif kind == "directory":
        inputs.mkdir()
    proc = run_cli("verify", built, option, inputs)
    assert_user_error(proc, str(inputs))


# ---------------------------------------------------------------------------------------
# unsupported shapes and attributes of supported ops
# ---------------------------------------------------------------------------------------
def _export(model, shape, path):
    import torch

    from edgekit.qat import export_qonnx

    from helpers.calibration import calibrate

    calibrate(model, shape, passes=1, batch=4, spread=1.0)
    return export_qonnx(model, torch.zeros(1, *shape), path)


@pytest.mark.parametrize("case, needle", [
    ("grouped", "group=2"),
    ("softmax_unquantized_input", "Softmax"),
    ("ceil_mode", "ceil_mode"),
])
def test_unsupported_attributes_name_the_node(case, needle, tmp_path, work):
    from torch import nn

    from helpers.brevitas_models import Seq, qconv2d

    if case == "grouped":
        model, shape = Seq(qconv2d(4, 4, 3, groups=2)), (4, 6, 6)
    elif case == "ceil_mode":
        model, shape = Seq(nn.MaxPool2d(2, ceil_mode=True)), (2, 5, 5)
    else:
        import brevitas.nn as qnn
        from brevitas.quant import Int32Bias, Int8WeightPerTensorFixedPoint

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.s = Seq(nn.Flatten(), qnn.QuantLinear(8, 4, weight_quant=Int8WeightPerTensorFixedPoint,
                                                           bias_quant=Int32Bias, return_quant_tensor=False))

            def forward(self, x):
                return nn.functional.softmax(self.s.body(self.s.inp(x)), dim=1)

        model, shape = M(), (2, 2, 2)
    path = _export(model, shape, tmp_path / f"{case}.onnx")
    proc = build_fails(path, work, *TARGET)
    assert_user_error(proc, needle)
    assert "node '" in proc.stderr


def test_tflite_for_fpga_is_refused(tmp_path, work):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3" + bytes(64))
    proc = build_fails(model, work, "--target", "fpga", "--board", "pynq-z2")
    assert_user_error(proc, "m.tflite", "QONNX")
