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


# --- validate: a classifier trained on digits, a float ONNX model, the MLPerf Tiny autoencoder ---
import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekit import validate  # noqa: E402
from edgekit.ir.graph import Graph  # noqa: E402
from edgekit.sim import quantize_input, simulate  # noqa: E402

MLPERF = __import__("pathlib").Path("/work/shared/peers/mlperf_tiny")


@pytest.fixture(scope="module")
def digits():
    from edgekit.data import load_digits

    return load_digits()


@pytest.fixture(scope="module")
def digits_models(digits, tmp_path_factory):
    """A QAT MLP (int8, power-of-two scales) built for a real board, and a float MLP as float ONNX."""
    from edgekit.qat import FloatMLP, QuantMLP, export_qonnx, train

    d = tmp_path_factory.mktemp("digits")
    qat = QuantMLP((8, 8), (32,), 10, "int8-pow2")
    train(qat, digits.x_train, digits.y_train, epochs=12, progress=False)
    onnx_path = export_qonnx(qat, torch.as_tensor(digits.x_test[:1]), d / "digits_qat.onnx")
    fl = FloatMLP((8, 8), (16,), 10)
    train(fl, digits.x_train, digits.y_train, epochs=4, progress=False)
    fl.eval()
    torch.onnx.export(fl, torch.as_tensor(digits.x_test[:1]), str(d / "digits_float.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    out = d / "build"
    build(onnx_path, "cortex-m4", "nucleo-l4r5zi", out)
    np.save(d / "x.npy", digits.x_test)
    np.save(d / "y.npy", digits.y_test)
    return out, d / "digits_float.onnx", d


def test_classifier_accuracy_is_the_simulators(digits, digits_models):
    out, _, _ = digits_models
    rep = validate(out, digits.x_test, digits.y_test, firmware_count=16)
    # the same figure computed independently: quantize, simulate, argmax of the output codes
    g = Graph.load(out)
    y = simulate(g, quantize_input(g, digits.x_test))[g.outputs[0]].reshape(len(digits.x_test), -1)
    expected = float(np.mean(np.argmax(y, axis=1) == digits.y_test))
    j = rep.to_json()
    assert j["accuracy"] == expected and expected > 0.8  # ten classes: chance is 0.1
    cm = np.array(j["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == len(digits.y_test) and np.trace(cm) == j["correct"]
    assert [c["samples"] for c in j["per_class"]] == np.bincount(digits.y_test, minlength=10).tolist()
    # power-of-two scales: qonnx's float execution is the same model, so nothing is lost
    assert j["float_accuracy"] == expected and j["accuracy_drop"] == 0.0 and j["agreement"] == 1.0
    # the firmware of the real board ran the first 16 samples on the emulated Cortex-M4, exactly
    assert j["firmware_vectors"] == 16 and j["firmware_exact"] and j["emulated_board"] == "mps2-an386"
    assert rep.ok and json.loads((out / "validate.json").read_text()) == json.loads(json.dumps(j))
    text = rep.text()
    assert "confusion matrix (rows: true class, columns: predicted class)" in text
    assert "on mps2-an386 (stand-in for nucleo-l4r5zi, the same core)" in text


def test_cli_json_float_model_and_max_drop(digits, digits_models):
    import onnxruntime as ort

    out, float_onnx, d = digits_models
    # labels = the float model's own predictions: its accuracy is 1, the integer model's is what agrees
    sess = ort.InferenceSession(str(float_onnx), providers=["CPUExecutionProvider"])
    float_pred = np.argmax(sess.run(None, {"x": digits.x_test})[0], axis=1)
    np.save(d / "y_float.npy", float_pred)
    p = run_cli("validate", out, "--data", d / "x.npy", "--labels", d / "y_float.npy", "--float-model", float_onnx,
                "--firmware-count", "4", "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert list(j)[:3] == ["accuracy", "float_accuracy", "accuracy_drop"]
    assert j["float_accuracy"] == 1.0 and 0 < j["accuracy_drop"] == pytest.approx(100 * (1 - j["accuracy"]))
    assert j["task"] == "classification" and j["firmware"]["ok"] and "onnxruntime" in j["float_reference"]
    fail = run_cli("validate", out, "--data", d / "x.npy", "--labels", d / "y_float.npy", "--float-model",
                   float_onnx, "--firmware-count", "0", "--max-drop", "0")
    assert fail.returncode == 1, fail.stdout + fail.stderr
    assert "FAIL: the accuracy drop" in fail.stdout and "exceeds --max-drop 0" in fail.stdout
    ok = run_cli("validate", out, "--data", d / "x.npy", "--labels", d / "y_float.npy", "--float-model",
                 float_onnx, "--firmware-count", "0", "--max-drop", "100")
    assert ok.returncode == 0 and "PASS: accuracy drop within 100 points" in ok.stdout


def test_whole_set_goes_through_the_simulator_in_large_batches(digits, digits_models, monkeypatch):
    """No per-sample work: 10,000 samples are a handful of simulator calls (and one quantization)."""
    from edgekit.validation import run

    out, _, _ = digits_models
    calls = []
    real = run.simulate
    monkeypatch.setattr(run, "simulate", lambda g, c: calls.append(len(c)) or real(g, c))
    x = np.resize(digits.x_test, (10_000, 8, 8))
    y = np.resize(digits.y_test, 10_000)
    rep = validate(out, x, y, firmware_count=0, write=False)
    assert calls == [10_000]  # 64 inputs, 32 hidden: the whole set is one batch
    assert rep.result["samples"] == 10_000 and rep.firmware is None


def test_a_stage_that_differs_fails_validation(digits, digits_models, tmp_path):
    """A host runner that writes wrong outputs: validate exits 1 and names the stage."""
    import shutil

    out, _, d = digits_models
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    runner = bad / "host" / "ek_host_runner"
    runner.write_text(f"#!{sys.executable}\nimport os\n"
                      "n = os.path.getsize('inputs.bin') // 64\n"  # 64 int8 input codes per sample
                      "open('outputs.bin', 'wb').write(bytes([127]) * (10 * n))\n")
    p = run_cli("validate", bad, "--data", d / "x.npy", "--labels", d / "y.npy", "--firmware-count", "4")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "host C: " in p.stdout and "FAIL: a stage that must be exact differs" in p.stdout
    assert json.loads((bad / "validate.json").read_text())["firmware_exact"] is False


@pytest.mark.parametrize("labels, message", [
    (np.zeros(7, np.int64), "7 labels for 450 samples"),
    (np.full(450, 10), "class ids from 10 to 10, but the model has 10 outputs"),
    (np.zeros(450, np.float32), "float targets of shape (450,), but the model has 10 outputs per sample"),
])
def test_bad_labels_are_one_error_line(digits_models, labels, message):
    out, _, d = digits_models
    np.save(d / "bad.npy", labels)
    p = run_cli("validate", out, "--data", d / "x.npy", "--labels", d / "bad.npy", "--firmware-count", "0")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def ad_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ad") / "build"
    build(MLPERF / "ad01_int8.tflite", "cortex-m4", "mps2-an386", out)
    return out


@pytest.mark.skipif(not (MLPERF / "ad01_int8.tflite").is_file(), reason="MLPerf Tiny models not in ../shared")
def test_autoencoder_validated_on_its_own_outputs(ad_build, tmp_path):
    golden = np.load(MLPERF / "ad01_int8_golden.npz")
    codes = golden["inputs"].reshape(20, 640)
    out_t = Graph.load(ad_build).tensors[Graph.load(ad_build).outputs[0]]
    targets = (golden["outputs"].reshape(20, 640).astype(np.float64) - out_t.zero_point) * out_t.scale[0]
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "targets.npy", targets)
    p = run_cli("validate", ad_build, "--codes", tmp_path / "codes.npy", "--labels", tmp_path / "targets.npy",
                "--firmware-count", "4", "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert list(j)[:2] == ["rmse", "cosine"] and j["task"] == "regression"
    # TFLite Micro's own outputs as targets: the deployed model reproduces them exactly
    assert j["rmse"] == 0.0 and j["max_error"] == 0.0 and j["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert j["float_reference"] is None and j["float_rmse"] is None and j["firmware_exact"]
    no_drop = run_cli("validate", ad_build, "--codes", tmp_path / "codes.npy", "--labels", tmp_path / "targets.npy",
                      "--firmware-count", "0", "--max-drop", "1")
    assert no_drop.returncode == 2 and "--max-drop is the accuracy drop of a classifier" in no_drop.stderr


def test_tflite_build_needs_a_float_model_for_max_drop(ad_build, tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((3, 640), np.int8))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    p = run_cli("validate", ad_build, "--codes", tmp_path / "c.npy", "--labels", tmp_path / "y.npy", "--max-drop", "1")
    assert p.returncode == 2 and "--max-drop needs a float reference" in p.stderr and "--float-model" in p.stderr
