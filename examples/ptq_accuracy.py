"""Post-training quantization accuracy: float model vs `edgekit quantize` -> `edgekit build`.

    python examples/ptq_accuracy.py [--out ptq_out] [--skip-keras]

digits (sklearn, 8x8, 10 classes): a float PyTorch CNN trained here, exported to float ONNX,
quantized with `edgekit quantize` (8-bit power-of-two scales, 8-bit float scales, 4-bit
weights per channel) and built for mps2-an386. HAR (edgekit.data.har): a float Keras 1D CNN,
quantized to int8 TFLite with `edgekit quantize` and built. Accuracy of a build is the integer
simulator's over the whole test split (the firmware computes the same integers: `edgekit
verify` checks that). Prints one table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgekit.ir.graph import Graph
from edgekit.sim import quantize_input, simulate

DIGITS_VARIANTS = [("PTQ 8-bit, pow2 scales", ["--scales", "pow2"]),
                   ("PTQ 8-bit, float scales", ["--scales", "float"]),
                   ("PTQ 4-bit weights, pow2, per channel", ["--scales", "pow2", "--weight-bits", "4", "--per-channel"]),
                   ("PTQ 4-bit weights, float, per channel", ["--scales", "float", "--weight-bits", "4",
                                                             "--per-channel"])]


def edgekit(*args) -> None:
    cmd = [sys.executable, "-m", "edgekit", *map(str, args)]
    print("$ edgekit " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build_accuracy(model: Path, out: Path, x: np.ndarray, y: np.ndarray) -> float:
    edgekit("build", model, "--target", "cortex-m4", "--board", "mps2-an386", "-o", out)
    graph = Graph.load(out)
    codes = simulate(graph, quantize_input(graph, x))[graph.outputs[0]]
    return float((codes.reshape(len(y), -1).argmax(1) == y).mean())


def digits_rows(out: Path) -> list[tuple[str, str, float]]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.25, random_state=0,
                                                        stratify=d.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64, 10))
    epochs, batch = 20, 64
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=epochs * -(-len(x_train) // batch))
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        float_acc = float((model(torch.as_tensor(x_test)).argmax(1).numpy() == y_test).mean())
    onnx_path = out / "digits_float.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(onnx_path), dynamo=False)
    np.save(out / "digits_calib.npy", x_train)
    rows = [("digits", "float (PyTorch)", float_acc)]
    for k, (label, flags) in enumerate(DIGITS_VARIANTS):
        q = out / f"digits_ptq{k}.onnx"
        edgekit("quantize", onnx_path, "--data", out / "digits_calib.npy", *flags, "-o", q)
        rows.append(("digits", label, build_accuracy(q, out / f"digits_build{k}", x_test, y_test)))
    return rows


def har_rows(out: Path) -> list[tuple[str, str, float]]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from edgekit.data import load_har

    data = load_har()
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input(data.x_train.shape[1:]), layers.Conv1D(16, 5, activation="relu"),
                                 layers.MaxPooling1D(2), layers.Conv1D(24, 5, activation="relu"),
                                 layers.GlobalAveragePooling1D(), layers.Dense(len(data.class_names))])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=10, batch_size=64, verbose=0)
    float_acc = float((model.predict(data.x_test, verbose=0).argmax(1) == data.y_test).mean())
    model.save(out / "har_cnn.keras")
    np.save(out / "har_calib.npy", data.x_train[::8])
    edgekit("quantize", out / "har_cnn.keras", "--data", out / "har_calib.npy", "--per-channel",
            "-o", out / "har_cnn_int8.tflite")
    return [("HAR", "float (Keras)", float_acc),
            ("HAR", "int8 TFLite (PTQ, per channel)",
             build_accuracy(out / "har_cnn_int8.tflite", out / "har_build", data.x_test, data.y_test))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="ptq_out", help="output folder (ptq_out; rewritten)")
    ap.add_argument("--skip-keras", action="store_true", help="only the digits rows (no TensorFlow)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = digits_rows(out)
    if not args.skip_keras:
        rows += har_rows(out)
    print(f"\n{'data set':<9} {'model':<40} {'test accuracy':>13}")
    for data_set, label, acc in rows:
        print(f"{data_set:<9} {label:<40} {acc:>13.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
