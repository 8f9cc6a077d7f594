"""Every ``edgekit ...`` command shown in README.md and docs/*.md, run as written (placeholders
replaced by real files) on a Cortex-M build, a TFLite build and an FPGA build.

None may end in an internal error or a traceback; a command documented for a kind of build
succeeds on it (or fails the way the docs say it does, in ``DOCUMENTED_ERRORS``); on the other
kinds it succeeds or gives one ``error:`` line. The commands come from the docs themselves, so a
new documented command is run without editing this file; the exceptions below are checked to
still be in the docs, so they cannot go stale.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.api import build
from edgekit.cli import main, make_parser
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from edgekit.qat import export_qonnx
from helpers.brevitas_models import FloatInputMLP, make_mlp
from helpers.calibration import calibrate
from helpers.tflite_layers import conv_layer, fc_layer, flatten

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# commands on a build directory: run on every kind of build
BUILD_DIR_COMMANDS = {"verify", "report", "profile", "export", "flash", "validate"}
# commands that run long (training, searches, benches, campaigns): the slow test, shortened where
# the docs' settings would take tens of minutes (the extra options are appended, never replaced)
SHORTENED = {"nas": ["--trials", "2", "--epochs", "1", "--calibration", "3", "--verify-top", "1"],
             "fuzz": ["--count", "2"]}
FAST = {"build", "targets", *BUILD_DIR_COMMANDS}

# (doc command without its comment, kind of build or None for all) -> what the docs say happens:
# one error line starting with this text
DOCUMENTED_ERRORS = {
    ("edgekit profile out_fpga/", "fpga"): "error: profile counts Cortex-M instructions on QEMU",
    ("edgekit flash out_fpga/", "fpga"): "error: flash runs firmware on a microcontroller board",
    ("edgekit flash out/ --board nucleo-l4r5zi", None): "error: ",  # not the build's board: rebuild for it
    ("edgekit build fixed.onnx --target cortex-m4 --board tiny.toml -o out/", None): "error: ",  # the docs' board file
    ("edgekit fuzz --spec DIR/mismatch-seed1002/spec.json --board mps2-an386", None): "error: ",  # a saved spec's path
}
# lines that show a command's syntax rather than a command to run
SYNOPSES = {"edgekit fuzz --count 200 --seed 0 --board mps2-an386 [--kernels reference|optimized] [--fpga] --out DIR "
            "[--json]", "edgekit fuzz --count 200 --optimize size|balanced|speed [--flash-goal-scale F] [--wide] --out DIR",
            "edgekit nas ... -o nas_out/"}


def _doc_lines(path: Path):
    """Command lines in code blocks (fenced, or indented by 4 spaces): the ``$ `` lines where a
    block has prompts (the rest is output), else every line that starts with ``edgekit``."""
    text = path.read_text()
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    blocks += re.findall(r"((?:^ {4}edgekit [^\n]*\n)+)", text, flags=re.M)
    for block in blocks:
        lines = block.replace("\\\n", " ").splitlines()
        prompted = any(line.lstrip().startswith("$ edgekit ") for line in lines)
        for line in lines:
            s = line.strip()
            if prompted:
                if not s.startswith("$ edgekit "):
                    continue
                s = s[2:]
            if s.startswith("edgekit "):
                yield s


def command_text(line: str) -> str:
    """A command line without its comment, one space between words."""
    return " ".join(shlex.split(line, comments=True))


def doc_commands() -> list[tuple[str, str]]:
    sub = make_parser()._subparsers._group_actions[0].choices  # the registered subcommands
    found = []
    for path in DOCS:
        for line in _doc_lines(path):
            line = line if line in SYNOPSES else command_text(line)
            words = line.split()
            if len(words) > 1 and words[1] in sub and line not in (f for _, f in found):  # first doc showing it
                found.append((path.name, line))
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands_and_the_exceptions_are_still_there():
    lines = {line for _, line in COMMANDS}
    assert len(lines) >= 25, lines
    for sub in ("build", "verify", "report", "profile", "export", "flash", "targets", "bench", "nas", "fuzz"):
        assert any(line.split()[1] == sub for line in lines), sub
    stale = [cmd for cmd, _ in DOCUMENTED_ERRORS if cmd not in lines] + [s for s in SYNOPSES if s not in lines]
    assert not stale, f"no longer in the docs: {stale}"


# ---------------------------------------------------------------------------------------
# The three builds and the files the commands name
# ---------------------------------------------------------------------------------------
def depthwise_tflite(path: Path) -> Path:
    """conv -> depthwise -> dense -> softmax, int8: what a small keyword-spotting model holds."""
    A = tflite.ActivationFunctionType
    rng = np.random.default_rng(3)
    b = TfliteBuilder()
    x = b.act((1, 8, 6, 2), 0.02, 3)
    y, shp, s, zp = conv_layer(b, rng, x, (8, 6, 2), 0.02, 8, 3, 2, "SAME", A.RELU, x_rms=40)
    y, shp, s, zp = conv_layer(b, rng, y, shp, s, 0, 3, 1, "SAME", A.RELU, depthwise=True, x_rms=25)
    flat, n = flatten(b, y, shp, s, zp)
    logits = fc_layer(b, rng, flat, n, s, 6, 25, 0.06, 5)
    out = b.act((1, 6), 1 / 256, -128)
    b.op("SOFTMAX", [logits], [out], "SoftmaxOptions", Beta=1.0)
    path.write_bytes(b.build([x], [out]))
    return path


def _hls_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("hls4ml") is not None and shutil.which("g++") is not None


KINDS = ["cortexm", "tflite", "fpga"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("doc_commands")
    onnx = export_qonnx(make_mlp("int8-pow2", input_shape=(16,), hidden=(8,), n_out=5), torch.zeros(1, 16),
                        d / "model.onnx")
    # the same network in float, the reference `validate --float-model` compares with
    torch.manual_seed(0)
    float_mlp = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5)).eval()
    torch.onnx.export(float_mlp, (torch.zeros(1, 16),), str(d / "float.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    # a QKeras-style model (no input quantizer) and float samples for `build --input-bits N --calibration x.npy`
    torch.manual_seed(0)
    qkeras = export_qonnx(calibrate(FloatInputMLP(), (12,), passes=2, batch=16, spread=1.5), torch.zeros(1, 12),
                          d / "qkeras.onnx")
    np.save(d / "qkeras_x.npy", np.random.default_rng(0).normal(0, 1.5, (64, 12)).astype(np.float32))
    return {"dir": d, "onnx": onnx, "tflite": depthwise_tflite(d / "model.tflite"), "float_onnx": d / "float.onnx",
            "qkeras_onnx": qkeras, "qkeras_x": d / "qkeras_x.npy"}


@pytest.fixture(scope="module")
def builds(files) -> dict:
    from edgekit.ir.graph import Graph
    from edgekit.sim import quantize_input
    from edgekit.stages import generate_inputs

    d = files["dir"]
    out = {"cortexm": build(files["onnx"], "cortex-m4", "mps2-an386", d / "b_cortexm").out_dir,
           "tflite": build(files["tflite"], "cortex-m4", "mps2-an386", d / "b_tflite").out_dir}
    if _hls_available():
        out["fpga"] = build(files["onnx"], "fpga", "pynq-z2", d / "b_fpga").out_dir
    rng = np.random.default_rng(0)
    for kind, bd in list(out.items()):
        graph = Graph.load(bd)
        x = generate_inputs(graph, 8, seed=1)
        np.save(d / f"{kind}_x.npy", x)
        np.save(d / f"{kind}_codes.npy", quantize_input(graph, x))
        shape = graph.tensors[graph.outputs[0]].shape
        np.save(d / f"{kind}_labels.npy", rng.integers(0, shape[-1], 8))  # class ids
        np.save(d / f"{kind}_targets.npy", rng.normal(size=(8, *shape)).astype(np.float32))  # a regressor's targets
    return out


def _argv(line: str, kind: str | None, files: dict, builds: dict, work: Path) -> list[str]:
    """The command's arguments with the docs' placeholders replaced by this test's files."""
    words = shlex.split(line, comments=True)[1:]
    argv, prev = [], None
    for i, w in enumerate(words):
        if prev in ("-o", "--output", "--out"):  # whatever the output's name says, it goes into this test's folder
            w = str(work / w.strip("/"))
        elif prev == "--float-model":
            w = str(files["float_onnx"])
        elif prev == "--labels":
            w = str(files["dir"] / f"{kind}_{'targets' if 'target' in w else 'labels'}.npy")
        elif w.endswith(".onnx") and words[0] == "quantize" and prev != "-o":
            w = str(files["float_onnx"])  # quantize takes a float model
        elif prev == "--calibration" and w.endswith(".npy"):  # build --input-bits: the QKeras-style model's samples
            w = str(files["qkeras_x"])
        elif w.endswith(".onnx") and "qkeras" in w:
            w = str(files["qkeras_onnx"])
        elif w.endswith(".keras"):
            w = str(keras_model(files["dir"]))
        elif w.endswith(".onnx"):
            w = str(files["onnx"])
        elif w.endswith(".tflite"):
            w = str(files["tflite"])
        elif w.endswith(".npy"):  # without a build (e.g. quantize's calibration data): the float MLP's inputs
            w = str(files["dir"] / f"{kind or 'cortexm'}_{'codes' if 'codes' in w else 'x'}.npy")
        elif i == 1 and words[0] in BUILD_DIR_COMMANDS:
            w = str(builds[kind])
        argv.append(w)
        prev = w
    return argv


def keras_model(folder: Path) -> Path:
    """A small float Keras model with the float MLP's input (16 values), for `edgekit quantize model.keras`."""
    path = folder / "model.keras"
    if not path.exists():
        keras = pytest.importorskip("keras")
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(5)])
        model.save(path)
    return path


def _documented_for(line: str) -> set[str]:
    """The kinds of build a build-directory command is shown with: out_fpga/ -> fpga, a float reference
    model -> the QONNX build it was trained as, else the two Cortex-M builds (the docs use out/ for QONNX
    and TFLite builds alike)."""
    words = shlex.split(line, comments=True)
    if words[2].startswith("out_fpga"):
        return {"fpga"}
    return {"cortexm"} if "--float-model" in words else {"cortexm", "tflite"}


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refused the arguments (usage line, exit 2)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _check(line: str, kind: str | None, code: int, out: str, err: str, documented: bool) -> None:
    where = f"`{line}` on the {kind or 'no'} build: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in out + err and "internal error" not in err, where
    expected_error = DOCUMENTED_ERRORS.get((line, kind), DOCUMENTED_ERRORS.get((line, None)))
    if expected_error is not None and documented:
        assert code == 2 and err.startswith(expected_error) and err.count("\n") == 1, where
    elif documented:
        assert code == 0, where
    else:  # another kind of build: it works, or one line says why not
        assert code == 0 or (code == 2 and err.startswith("error: ") and err.count("\n") == 1), where
    if "--json" in line.split() and code in (0, 1):
        json.loads(out)  # stdout is one JSON document and nothing else


def _cases(fast: bool):
    for doc, line in COMMANDS:
        sub = line.split()[1]
        if line in SYNOPSES or (sub in FAST) != fast:
            continue
        if sub in BUILD_DIR_COMMANDS:
            for kind in KINDS:
                marks = [pytest.mark.slow] if (kind == "fpga" and sub == "verify" and "--json" not in line) else []
                yield pytest.param(line, kind, id=f"{doc}: {line[:70]} [{kind}]", marks=marks)
        else:
            yield pytest.param(line, None, id=f"{doc}: {line[:70]}")


@pytest.mark.parametrize("line, kind", list(_cases(fast=True)))
def test_documented_command(line, kind, files, builds, tmp_path, capsys):
    if kind is not None and kind not in builds:
        pytest.skip("no FPGA build here: hls4ml and g++ are needed")
    if line.split()[1] == "build" and "--target fpga" in line and not _hls_available():
        pytest.skip("hls4ml and g++ are needed")
    argv = _argv(line, kind, files, builds, tmp_path)
    code, out, err = _run(capsys, argv)
    documented = kind is None or kind in _documented_for(line)
    _check(line, kind, code, out, err, documented)


@pytest.mark.slow
@pytest.mark.parametrize("line, kind", list(_cases(fast=False)))
def test_documented_long_command(line, kind, files, builds, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = _argv(line, kind, files, builds, tmp_path) + SHORTENED.get(line.split()[1], [])
    code, out, err = _run(capsys, argv)
    if line.split()[1] == "nas" and code == 1:  # a result: no model met the budgets in two trials; the report says so
        assert "Traceback" not in out + err and "internal error" not in err, err[-3000:]
        return
    _check(line, kind, code, out, err, documented=True)
