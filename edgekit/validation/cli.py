"""The ``edgekit validate`` command (edgekit/cli.py adds it with :func:`add_parser`)."""
from __future__ import annotations

import json

from .run import DEFAULT_FIRMWARE_COUNT, RESULT_FILE


def _cmd_validate(args) -> int:
    from . import validate

    rep = validate(args.build_dir, data=args.data, labels=args.labels, codes=args.codes, float_model=args.float_model,
                   firmware_count=args.firmware_count, max_drop=args.max_drop, timeout=args.timeout)
    print(json.dumps(rep.to_json(), indent=1) if args.json else rep.text())
    return 0 if rep.ok else 1


def add_parser(sub) -> None:
    v = sub.add_parser(
        "validate", help="accuracy (or RMSE/cosine) of a build on a labelled data set, against the float model",
        description="Run a labelled data set through the build's integer model (edgekit's simulator, in large "
        "batches) and its float reference, and the first samples through every verify stage (host C and the "
        "firmware on the emulated board), so the figures are the firmware's. Classifiers (integer class ids): "
        "top-1 accuracy, per-class accuracy, confusion matrix, the drop against the float reference. Regressors "
        "and autoencoders (float targets shaped like the output): RMSE, largest error, cosine similarity. "
        f"Writes {RESULT_FILE} into the build directory. Exits 1 if a stage that must be exact differs or the "
        "drop exceeds --max-drop.")
    v.add_argument("build_dir", help="directory written by `edgekit build`")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="float samples (.npy) in the model's input layout, shape (N, ...)")
    src.add_argument("--codes", help="raw integer input codes (.npy, e.g. int8 for TFLite models), used as they are")
    v.add_argument("--labels", required=True, help="labels (.npy): integer class ids, shape (N,), for a classifier; "
                   "float targets shaped like the output, (N, ...), for a regressor or autoencoder")
    v.add_argument("--float-model", help="float ONNX model for the reference, run with onnxruntime (default for "
                   "QONNX builds: qonnx's execution of the build's QONNX graph; TFLite builds have none without it)")
    v.add_argument("--firmware-count", type=int, default=DEFAULT_FIRMWARE_COUNT, metavar="N",
                   help=f"the first N samples go through every verify stage ({DEFAULT_FIRMWARE_COUNT}; 0: none)")
    v.add_argument("--max-drop", type=float, metavar="POINTS", help="exit 1 if the accuracy falls more than POINTS "
                   "percentage points below the float reference's (classifiers)")
    v.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit of each verify stage (as verify)")
    v.add_argument("--json", action="store_true", help="print the result as JSON (accuracy, float_accuracy, "
                   "accuracy_drop or rmse, cosine at the top level)")
    v.set_defaults(func=_cmd_validate)
