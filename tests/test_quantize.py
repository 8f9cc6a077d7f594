"""edgekit quantize: post-training quantization of a float PyTorch CNN trained here on sklearn's
digits, of the same model exported as float ONNX, and of a Keras 1D CNN on HAR.

The accuracy of a build is the integer simulator's on the test split: the firmware computes
exactly what the simulator computes (verify checks it on a subset here).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.api import build, quantize, verify
from edgekit.errors import EdgekitError
from edgekit.ir.graph import Graph
from edgekit.sim import quantize_input, simulate


class DigitsCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def accuracy(logits, y) -> float:
    return float((np.asarray(logits).reshape(len(y), -1).argmax(1) == y).mean())


@pytest.fixture(scope="module")
def float_cnn(digits):
    x_train, x_test, y_train, y_test = digits
    torch.manual_seed(0)
    model = DigitsCnn()
    epochs, batch = 20, 64
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    # the one-cycle schedule ends in a flat minimum: a well-trained float model is what PTQ is for
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=epochs * -(-len(x_train) // batch))
    x, y = torch.as_tensor(x_train), torch.as_tensor(y_train)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = accuracy(model(torch.as_tensor(x_test)).numpy(), y_test)
    assert acc > 0.95, acc
    return model, acc


@pytest.fixture(scope="module")
def float_onnx(float_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("float") / "digits_cnn.onnx"
    torch.onnx.export(float_cnn[0], torch.zeros(1, 1, 8, 8), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def sim_accuracy(build_dir, x, y) -> float:
    graph = Graph.load(build_dir)
    return accuracy(simulate(graph, quantize_input(graph, x))[graph.outputs[0]], y)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("source", ["torch", "onnx"])
@pytest.mark.parametrize("scales", ["pow2", "float"])
def test_ptq_8bit_within_one_point_of_float(source, scales, digits, float_cnn, float_onnx, tmp_path):
    x_train, x_test, _, y_test = digits
    model, float_acc = float_cnn
    res = quantize(model if source == "torch" else float_onnx, x_train, tmp_path / "q.onnx", scales=scales)
    assert res.kind == "qonnx" and res.path.is_file() and res.calibration_samples == len(x_train)
    out = build(res.path, "cortex-m4", "mps2-an386", tmp_path / "out").out_dir
    acc = sim_accuracy(out, x_test, y_test)
    print(f"\ndigits {source} PTQ 8-bit {scales}: {acc:.4f} (float {float_acc:.4f})")
    assert acc >= float_acc - 0.01


def test_cli_quantize_onnx_then_build_and_verify_bit_exact(digits, float_cnn, float_onnx, tmp_path):
    """The command line path on the float ONNX file; power-of-two scales: every stage, qonnx included, exact."""
    x_train, x_test, _, y_test = digits
    np.save(tmp_path / "calib.npy", x_train)
    np.save(tmp_path / "x.npy", x_test[:64])
    q = run_cli("quantize", float_onnx, "--data", tmp_path / "calib.npy", "--per-channel", "-o", tmp_path / "q.onnx",
                "--json")
    assert q.returncode == 0, q.stderr
    info = json.loads(q.stdout)
    assert info["scales"] == "pow2" and info["per_channel"] and info["format"] == "qonnx"
    b = run_cli("build", tmp_path / "q.onnx", "--target", "cortex-m4", "--board", "mps2-an386", "-o", tmp_path / "out")
    assert b.returncode == 0, b.stderr
    v = run_cli("verify", tmp_path / "out", "--inputs", tmp_path / "x.npy", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    stages = {s["stage"]: s for s in json.loads(v.stdout)["stages"]}
    for stage in ("qonnx (float32)", "host C", "firmware (mps2-an386)"):
        assert stages[stage]["must_be_exact"] and stages[stage]["mismatches"] == 0, stages[stage]
    # quantize -> build -> validate: the deployed model's accuracy against the float ONNX model's, and the
    # firmware exact on a subset
    np.save(tmp_path / "x_test.npy", x_test)
    np.save(tmp_path / "y_test.npy", y_test)
    val = run_cli("validate", tmp_path / "out", "--data", tmp_path / "x_test.npy", "--labels", tmp_path / "y_test.npy",
                  "--float-model", float_onnx, "--firmware-count", "8", "--max-drop", "1", "--json")
    assert val.returncode == 0, val.stdout + val.stderr
    rep = json.loads(val.stdout)
    assert rep["accuracy"] == sim_accuracy(tmp_path / "out", x_test, y_test)
    assert abs(rep["float_accuracy"] - float_cnn[1]) < 1e-9 and rep["accuracy_drop"] <= 1.0
    assert rep["firmware_vectors"] == 8 and rep["firmware_exact"]


def test_float_scales_verify_bit_exact_on_the_board(digits, float_cnn, tmp_path):
    x_train, x_test, _, _ = digits
    res = quantize(float_cnn[0], x_train[:256], tmp_path / "q.onnx", scales="float")
    out = build(res.path, "cortex-m4", "mps2-an386", tmp_path / "out").out_dir
    rep = verify(out, inputs=x_test[:64])
    assert rep.ok, rep.table()
    stages = {s["stage"]: s for s in rep.to_json()["stages"]}
    assert stages["host C"]["mismatches"] == 0 and stages["firmware (mps2-an386)"]["mismatches"] == 0
    assert stages["qonnx (float32)"]["max_lsb"] <= 1


@pytest.mark.parametrize("scales", ["pow2", "float"])
def test_4bit_weights_build_verify_and_report_the_drop(scales, digits, float_cnn, float_onnx, tmp_path):
    x_train, x_test, _, y_test = digits
    res = quantize(float_onnx, x_train, tmp_path / "q4.onnx", weight_bits=4, scales=scales, per_channel=True)
    out = build(res.path, "cortex-m4", "mps2-an386", tmp_path / "out").out_dir
    weights = [t for t in Graph.load(out).tensors.values() if t.const and t.dtype == "int8"]
    assert weights and all(t.bits == 4 for t in weights)  # every weight tensor on the 4-bit grid
    rep = verify(out, inputs=x_test[:32], skip=("qemu",))
    assert rep.ok, rep.table()
    acc = sim_accuracy(out, x_test, y_test)
    print(f"\ndigits ONNX PTQ 4-bit weights {scales} per channel: {acc:.4f} (float {float_cnn[1]:.4f}, "
          f"drop {100 * (float_cnn[1] - acc):.1f} points)")
    assert acc > 0.5  # ten classes: chance is 0.1


def test_onnx_translation_matches_onnxruntime(float_onnx, float_cnn, digits):
    from edgekit.ptq.onnx_float import check_conversion, onnx_to_torch

    module, shape = onnx_to_torch(float_onnx)
    assert shape == (1, 8, 8)
    assert check_conversion(float_onnx, module, digits[1][:8]) < 1e-5


# ---------------------------------------------------------------------------------------
# Refusals: one error line, exit 2, nothing written
# ---------------------------------------------------------------------------------------
def _float_graph(path, op_type: str):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], name="the_op")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_cli_refusals_are_one_error_line(float_onnx, digits, tmp_path):
    x_train = digits[0]
    np.save(tmp_path / "calib.npy", x_train[:32])
    np.save(tmp_path / "wrong.npy", x_train[:32, :, :4])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "model.pt").write_bytes(b"not unpickled")
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    cases = [
        ((tmp_path / "model.pt", "calib.npy", "q.onnx"), "does not load pickled PyTorch files"),
        ((float_onnx, "wrong.npy", "q.onnx"), "calibration samples have shape (1, 4, 8), the model's input is (1, 8, 8)"),
        ((float_onnx, "objects.npy", "q.onnx"), "cannot read calibration data"),
        ((float_onnx, "missing.npy", "q.onnx"), "calibration data not found"),
        ((float_onnx, "calib.npy", "q.tflite"), "name the output *.onnx"),
        ((_float_graph(tmp_path / "softmax.onnx", "Softmax"), "calib.npy", "q.onnx"), "node 'the_op' (Softmax): not "
         "supported for quantization"),
        ((tmp_path / "model.keras", "calib.npy", "q.tflite"), "model.keras: cannot load the Keras model"),
    ]
    for (model, data, out), message in cases:
        r = run_cli("quantize", model, "--data", tmp_path / data, "-o", tmp_path / out)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (model, r.stderr)
        assert message in lines[0], lines[0]
        assert not (tmp_path / out).exists()


def test_already_quantized_model_is_not_quantized_again(float_cnn, digits, tmp_path):
    res = quantize(float_cnn[0], digits[0][:32], tmp_path / "q.onnx")
    with pytest.raises(EdgekitError, match="already quantized .* build it with `edgekit build`"):
        quantize(res.path, digits[0][:32], tmp_path / "again.onnx")


def test_keras_options_it_cannot_honour_are_refused(tmp_path):
    from edgekit.ptq.keras_tflite import check_keras_settings
    from edgekit.ptq.presets import PtqSettings

    with pytest.raises(EdgekitError, match="--scales pow2 is not available for Keras"):
        check_keras_settings(PtqSettings(scales="pow2"), "m.keras")
    with pytest.raises(EdgekitError, match="--weight-bits 4 is not available for Keras"):
        check_keras_settings(PtqSettings(scales="float", weight_bits=4), "m.keras")


# ---------------------------------------------------------------------------------------
# Keras: a 1D CNN on HAR -> TFLite converter -> edgekit's TFLite path, TFLite Micro as reference
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_keras_har_cnn_quantize_build_verify_with_tflite_micro(tmp_path):
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from edgekit.data import load_har

    data = load_har()
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input(data.x_train.shape[1:]), layers.Conv1D(16, 5, activation="relu"),
                                 layers.MaxPooling1D(2), layers.Conv1D(24, 5, activation="relu"),
                                 layers.GlobalAveragePooling1D(), layers.Dense(len(data.class_names))])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=3, batch_size=64, verbose=0)
    float_acc = accuracy(model.predict(data.x_test, verbose=0), data.y_test)
    assert float_acc > 0.6, float_acc  # six classes
    model.save(tmp_path / "har.keras")
    np.save(tmp_path / "calib.npy", data.x_train[::16])
    np.save(tmp_path / "x.npy", data.x_test[:128])

    q = run_cli("quantize", tmp_path / "har.keras", "--data", tmp_path / "calib.npy", "--per-channel",
                "-o", tmp_path / "har.tflite")
    assert q.returncode == 0, q.stderr
    b = run_cli("build", tmp_path / "har.tflite", "--target", "cortex-m4", "--board", "mps2-an386", "-o",
                tmp_path / "out")
    assert b.returncode == 0, b.stderr
    v = run_cli("verify", tmp_path / "out", "--inputs", tmp_path / "x.npy", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    stages = {s["stage"]: s for s in json.loads(v.stdout)["stages"]}
    assert stages["tflite reference"]["mismatches"] == 0 and stages["firmware (mps2-an386)"]["mismatches"] == 0
    acc = sim_accuracy(tmp_path / "out", data.x_test, data.y_test)
    print(f"\nHAR Keras 1D CNN: float {float_acc:.4f}, int8 TFLite (edgekit build) {acc:.4f}")
    assert acc >= float_acc - 0.03
