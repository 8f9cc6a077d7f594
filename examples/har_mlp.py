"""End to end: train a quantized MLP on UCI-HAR-style windows, export QONNX, build firmware
for an emulated Cortex-M4 board and verify every stage bit for bit.

    python examples/har_mlp.py [--out demo_out] [--epochs 12] [--preset int8-pow2]

Run by `make demo`. Prints float and QAT accuracy, Brevitas-vs-qonnx agreement, and the
output of `edgekit build`, `edgekit verify` and `edgekit validate` (the whole test split against
the float MLP, exported as float ONNX), which it runs as real commands.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.data import load_har
from edgekit.qat import FloatMLP, QuantMLP, evaluate, export_qonnx, get_preset, train

HIDDEN = (64, 32)


def edgekit_cli(*args: str) -> int:
    cmd = [sys.executable, "-m", "edgekit", *args]
    print(f"\n$ edgekit {' '.join(args)}", flush=True)
    return subprocess.run(cmd).returncode


def brevitas_vs_qonnx(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """Largest |difference| between Brevitas forward and qonnx execution, in output LSBs."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.util.cleanup import cleanup_model

    with torch.no_grad():
        ref = model(torch.as_tensor(x)).numpy()
    m = cleanup_model(ModelWrapper(str(onnx_path)).transform(ChangeBatchSize(len(x))))
    got = execute_onnx(m, {m.graph.input[0].name: x})[m.graph.output[0].name]
    lsb = float(model.output_quant.act_quant.scale().detach())
    return float(np.abs(got - ref).max() / lsb)


def run_preset(preset: str, data, out: Path, epochs: int, n_verify: int, board: str) -> int:
    p = get_preset(preset)
    print(f"\n=== QAT with preset {preset}: {p.description}")
    qmodel = QuantMLP(data.x_train.shape[1:], HIDDEN, len(data.class_names), p)
    train(qmodel, data.x_train, data.y_train, epochs=epochs, x_val=data.x_test, y_val=data.y_test,
          label=f"qat {preset}")
    qat_acc = evaluate(qmodel, data.x_test, data.y_test)
    print(f"QAT ({preset}) test accuracy: {qat_acc:.4f}")

    onnx_path = export_qonnx(qmodel, torch.as_tensor(data.x_test[:1]), out / f"har_mlp_{preset}.onnx")
    x_verify = data.x_test[:n_verify]
    np.save(out / "har_test_x.npy", x_verify)
    diff = brevitas_vs_qonnx(qmodel, onnx_path, x_verify)
    print(f"exported {onnx_path}; Brevitas vs qonnx on {n_verify} test windows: max |diff| = {diff:g} LSB")

    build_dir = out / f"build_{preset}"
    rc = edgekit_cli("build", str(onnx_path), "--target", "cortex-m4", "--board", board, "-o", str(build_dir))
    if rc != 0:
        return rc
    rc = edgekit_cli("verify", str(build_dir), "--inputs", str(out / "har_test_x.npy"))
    # The whole test split through the integer model (bit-exact with the firmware, which validate
    # checks again on the first windows), against the float MLP: accuracy, drop, confusion matrix.
    rc |= edgekit_cli("validate", str(build_dir), "--data", str(out / "har_test_all_x.npy"), "--labels",
                      str(out / "har_test_y.npy"), "--float-model", str(out / "har_mlp_float.onnx"))
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--verify-count", type=int, default=256, help="test windows run through every stage")
    ap.add_argument("--board", default="mps2-an386")
    ap.add_argument("--presets", default="int8-pow2,int8-float",
                    help="comma-separated quantizer presets (int8-pow2, w4a8-pow2, int8-float)")
    args = ap.parse_args()
    t0 = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_har()
    print(f"HAR windows (UCI HAPT recordings, 2.56 s @ 50 Hz, 6 channels): train {data.x_train.shape}, "
          f"test {data.x_test.shape}, classes {', '.join(data.class_names)}")

    print("\n=== float baseline")
    fmodel = FloatMLP(data.x_train.shape[1:], HIDDEN, len(data.class_names))
    train(fmodel, data.x_train, data.y_train, epochs=args.epochs, x_val=data.x_test, y_val=data.y_test,
          label="float")
    print(f"float test accuracy: {evaluate(fmodel, data.x_test, data.y_test):.4f}")
    fmodel.eval()
    torch.onnx.export(fmodel, torch.as_tensor(data.x_test[:1]), str(out / "har_mlp_float.onnx"), dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    np.save(out / "har_test_all_x.npy", data.x_test)
    np.save(out / "har_test_y.npy", data.y_test)

    status = 0
    for preset in args.presets.split(","):
        status |= run_preset(preset.strip(), data, out, args.epochs, args.verify_count, args.board)
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s ({'all stages verified' if status == 0 else 'FAILED'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
