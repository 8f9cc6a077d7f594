"""``edgekit quantize``: argument parsing and the command (registered by edgekit/cli.py).

Nothing heavy (torch, Brevitas, TensorFlow) is imported until the command runs.
"""
from __future__ import annotations

import json


def cmd_quantize(args) -> int:
    from . import quantize_model  # what edgekit.api.quantize calls (the api layer is above this package)

    res = quantize_model(args.model, args.data, args.output, weight_bits=args.weight_bits, scales=args.scales,
                   per_channel=args.per_channel, equalize=args.equalize, bias_correction=not args.no_bias_correction)
    print(json.dumps(res.to_json(), indent=1) if args.json else res.summary())
    return 0


def add_parser(sub) -> None:
    q = sub.add_parser(
        "quantize", help="post-training quantization: a float ONNX or Keras model + calibration data -> a model "
        "`edgekit build` compiles",
        description="Quantize a float model with calibration data, no training. A float ONNX file goes through "
        "Brevitas' post-training quantization (activation calibration, bias correction, optionally cross-layer "
        "equalization) and is written as QONNX (.onnx). A Keras model (.keras) goes through TensorFlow's TFLite "
        "converter with the calibration data as representative dataset and is written as a full-integer int8 "
        ".tflite (float scales, int8 weights only). PyTorch modules: edgekit.api.quantize (pickled .pt files are "
        "never loaded). Already quantized models (QONNX, QDQ ONNX, int8 TFLite) need no quantize: build them. "
        "See docs/quantize.md.")
    q.add_argument("model", help="float model: .onnx (e.g. torch.onnx.export) or .keras (keras.Model.save)")
    q.add_argument("--data", required=True, metavar="CALIB.npy", help="calibration samples (.npy, float, shape "
                   "(N, ...) in the model's input layout; a few hundred representative samples)")
    q.add_argument("-o", "--output", required=True, help="file to write: .onnx (QONNX) for an ONNX model, .tflite for "
                   "a Keras model")
    q.add_argument("--weight-bits", type=int, choices=[8, 4, 2], default=8, help="weight bit width (8); 4 and 2 "
                   "are packed in flash (ONNX models only)")
    q.add_argument("--scales", choices=["pow2", "float"], default=None, help="pow2: power-of-two scales, every "
                   "rescale a shift, bit-exact end to end including qonnx (default for ONNX); float: float scales, "
                   "the integer stages agree exactly and qonnx within an LSB (the only choice, and default, for Keras)")
    q.add_argument("--per-channel", action="store_true", help="one weight scale per output channel instead of one "
                   "per tensor")
    q.add_argument("--equalize", type=int, default=0, metavar="ITERATIONS", help="cross-layer equalization "
                   "iterations before quantizing (0: off; ONNX models; helps per-tensor weights when channel ranges "
                   "differ widely)")
    q.add_argument("--no-bias-correction", action="store_true", help="skip Brevitas' bias correction (ONNX models)")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_quantize)
