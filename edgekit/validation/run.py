"""``edgekit validate``: a labelled data set through the deployed integer model.

The whole set runs through edgekit's integer simulator in large batches (the simulator is
bit-exact with the firmware, which verify proves on the first vectors), and through a float
reference: a float ONNX model (``float_model``), or for a QONNX build qonnx's execution of its
QONNX graph. The first ``firmware_count`` samples go through ``edgekit.verify`` (host C and the
firmware on the emulated board, a stand-in for a real board), so the accuracy reported is the
firmware's. Classifiers (integer labels) get top-1 accuracy, per-class accuracy, the confusion
matrix and the drop against the float reference; regressors and autoencoders (float targets
shaped like the output) RMSE, largest error and cosine similarity.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..arrays import load_npy
from ..errors import DatasetError, VerificationError
from ..ir.graph import FLOAT_STEPS, Graph, unapply_pre_ops
from ..manifest import load_manifest
from ..progress import step
from ..sim import quantize_input, simulate
from ..stages import check_timeout, load_codes, load_float_inputs
from ..verify import verify
from . import metrics
from .reference import onnx_outputs, qonnx_outputs
from .report import ValidationReport

#: samples validate runs through the firmware by default
DEFAULT_FIRMWARE_COUNT = 32
#: int64 elements the simulator's largest activation may hold per batch (bounds its memory, not its speed)
SIMULATOR_BATCH_ELEMENTS = 1 << 22
#: where validate leaves its results in the build directory (the HTML report reads it)
RESULT_FILE = "validate.json"


def _float_reference(build_dir: Path, graph: Graph, frontend: str, float_model, x, codes: np.ndarray, n: int,
                     channels_first: bool) -> tuple[np.ndarray | None, str | None]:
    """The float reference's outputs and what it is: the given float ONNX model (onnxruntime),
    else qonnx's execution of a QONNX build's graph; (None, None) for a TFLite build without one."""
    if float_model is None and frontend != "qonnx":
        return None, None
    floats = x if x is not None else unapply_pre_ops(
        graph.input_quant, (codes.reshape(n, -1) - graph.input_quant.zero_point) * np.float64(graph.input_quant.scale))
    if float_model is not None:
        return onnx_outputs(Path(float_model), floats, channels_first), f"float model {float_model} (onnxruntime)"
    return (qonnx_outputs(build_dir / "model.onnx", floats),
            "qonnx execution of the build's QONNX graph (quantizers in float arithmetic)")


def simulate_outputs(graph: Graph, codes: np.ndarray) -> np.ndarray:
    """The simulator's output codes for every sample, (N, K) int64: a few large batches, no per-sample work."""
    largest = max((t.size for t in graph.tensors.values() if not t.const), default=1)  # weights are not per sample
    step = max(1, SIMULATOR_BATCH_ELEMENTS // largest)
    out = graph.outputs[0]
    return np.concatenate([simulate(graph, codes[i:i + step])[out].reshape(len(codes[i:i + step]), -1)
                           for i in range(0, len(codes), step)]) if len(codes) else np.zeros((0, 0), np.int64)


def dequantize_outputs(graph: Graph, codes: np.ndarray) -> np.ndarray:
    """Output codes -> the model's float outputs: (q - zero point) x scale (per channel on the last
    IR axis), then the float arithmetic after the last layer (output_post_ops), as qonnx computes it."""
    t = graph.tensors[graph.outputs[0]]
    scale = np.resize(np.asarray(t.scale, np.float64), codes.shape[1])
    y = (codes.astype(np.float64) - t.zero_point) * scale
    for step, c in graph.meta.get("output_post_ops") or []:
        y = FLOAT_STEPS[step](y, np.resize(np.asarray(c, np.float64), y.shape[1]))
    return y


def load_labels(labels, n: int, out_size: int, channels_first: bool) -> tuple[np.ndarray, bool]:
    """Labels -> (integer class ids (N,), True) for a classifier or (float targets (N, K), False)."""
    name = "labels" if isinstance(labels, np.ndarray) else str(labels)
    if not isinstance(labels, np.ndarray):
        labels = load_npy(labels, "labels", DatasetError)
    labels = np.asarray(labels)
    if labels.shape[:1] != (n,):
        raise DatasetError(f"{name}: {labels.shape[0] if labels.ndim else 0} labels for {n} samples; give one "
                           "label (class id) or target array per sample")
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        ids = labels.reshape(n, -1)
        if ids.shape[1] != 1:
            raise DatasetError(f"{name}: integer labels of shape {labels.shape}; a classifier's labels are one "
                               "class id per sample, shape (N,); regression targets are floats")
        if out_size < 2:
            raise DatasetError(f"{name}: integer class ids, but the model has {out_size} output: a classifier "
                               "needs one output per class; for a regressor give float targets")
        ids = ids[:, 0].astype(np.int64)
        if n and (ids.min() < 0 or ids.max() >= out_size):
            raise DatasetError(f"{name}: class ids from {ids.min()} to {ids.max()}, but the model has {out_size} "
                               f"outputs (classes 0..{out_size - 1})")
        return ids, True
    if not np.issubdtype(labels.dtype, np.floating):
        raise DatasetError(f"{name}: labels of type {labels.dtype}; give integer class ids or float targets")
    if labels.size != n * out_size:
        hint = " (for a classifier give integer class ids, e.g. y.astype(int))" if labels.ndim == 1 else ""
        raise DatasetError(f"{name}: float targets of shape {labels.shape}, but the model has {out_size} outputs "
                           f"per sample: give (N, {out_size}) targets shaped like the output{hint}")
    if channels_first and labels.ndim in (3, 4):  # a feature map in the model's layout -> the IR's
        labels = np.moveaxis(labels, 1, -1)
    if not np.isfinite(labels).all():
        raise DatasetError(f"{name}: the targets hold NaN or infinite values")
    return labels.reshape(n, out_size).astype(np.float64), False


def validate(build_dir: str | Path, data: str | Path | np.ndarray | None = None, labels=None, *,
             codes: str | Path | np.ndarray | None = None, float_model: str | Path | None = None,
             firmware_count: int = DEFAULT_FIRMWARE_COUNT, max_drop: float | None = None,
             timeout: float | None = None, write: bool = True) -> ValidationReport:
    """Validate a build on a labelled data set.

    ``data``: float samples in the model's input layout (an array or .npy file), or ``codes``:
    raw integer input codes (e.g. the int8 inputs of a TFLite model). ``labels``: integer class
    ids (N,) for a classifier, float targets shaped like the output (N, ...) for a regressor.
    ``float_model``: a float ONNX model for the reference (default for QONNX builds: qonnx's
    execution of the build's QONNX graph; TFLite builds have none without it).
    ``firmware_count``: the first samples run through every verify stage (0: none).
    ``max_drop``: accuracy points the integer model may lose against the float reference;
    the report's ``ok`` is False beyond it. ``write``: save ``validate.json`` in the build.
    """
    build_dir = Path(build_dir).resolve()
    manifest = load_manifest(build_dir)
    graph = Graph.load(build_dir)
    if labels is None:
        raise DatasetError("validate needs labels: integer class ids or float targets, one per sample")
    if (data is None) == (codes is None):
        raise DatasetError("give the samples as float data or as input codes (one of the two)")
    if not isinstance(firmware_count, int) or firmware_count < 0:
        raise VerificationError(f"firmware count {firmware_count!r}: give a number of samples, 0 or more")
    if max_drop is not None and not (np.isfinite(max_drop) and max_drop >= 0):
        raise VerificationError(f"--max-drop {max_drop!r}: give the accuracy points allowed to be lost, 0 or more")
    check_timeout(timeout)

    if codes is not None:
        codes, source = load_codes(graph, codes)
        x = None
    else:
        if not isinstance(data, np.ndarray) and not Path(data).is_file():
            raise DatasetError(f"{data}: no such data file")
        x, source = load_float_inputs(graph, data)
        codes = quantize_input(graph, x)
    n = len(codes)
    if n == 0:
        raise DatasetError(f"{source}: no samples")
    frontend = manifest.frontend or "qonnx"
    channels_first = frontend == "qonnx"  # QONNX feature maps are NCHW; the IR and TFLite are channels-last
    out_size = graph.tensors[graph.outputs[0]].size
    y_true, classifier = load_labels(labels, n, out_size, channels_first)
    if max_drop is not None and not classifier:
        raise VerificationError("--max-drop is the accuracy drop of a classifier (points); these labels are "
                                "regression targets")

    with step(f"validate: {n} samples through the simulator") as say:
        y_int = dequantize_outputs(graph, simulate_outputs(graph, codes))
        say(f"validate: {n} samples through the float reference")
        y_float, reference = _float_reference(build_dir, graph, frontend, float_model, x, codes, n, channels_first)
    if y_float is not None:
        if y_float.shape != y_int.shape:
            raise VerificationError(f"the float reference gives {y_float.shape[1]} outputs per sample, the build "
                                    f"{y_int.shape[1]}: --float-model must be the same network in float")
    if max_drop is not None and y_float is None:
        raise VerificationError(f"--max-drop needs a float reference: {build_dir} is a TFLite build, whose float "
                                "model edgekit does not have; give it with --float-model model.onnx")

    result: dict = {"task": "classification" if classifier else "regression", "samples": n}
    if classifier:
        pred = np.argmax(y_int, axis=1)
        result.update(metrics.classification(y_true, pred, out_size))
        result.update(float_accuracy=None, accuracy_drop=None, agreement=None)
        if y_float is not None:
            pred_f = np.argmax(y_float, axis=1)
            correct_f = int(np.count_nonzero(pred_f == y_true))
            result["float_accuracy"] = correct_f / n
            result["accuracy_drop"] = 100.0 * (correct_f - result["correct"]) / n  # points, from the counts
            result["agreement"] = float(np.mean(pred_f == pred))
            result["float_confusion_matrix"] = metrics.confusion_matrix(y_true, pred_f, out_size).tolist()
    else:
        result.update(metrics.regression(y_int, y_true))
        result.update(float_rmse=None, float_cosine=None, against_float=None)
        if y_float is not None:
            f = metrics.regression(y_float, y_true)
            result.update(float_rmse=f["rmse"], float_max_error=f["max_error"], float_cosine=f["cosine"],
                          against_float=metrics.regression(y_int, y_float))

    firmware = None
    if firmware_count:
        k = min(firmware_count, n)
        firmware = verify(build_dir, inputs=None if x is None else x[:k], codes=None if x is not None else codes[:k],
                          timeout=timeout)
    report = ValidationReport(str(build_dir), manifest.board, frontend, source, reference, max_drop, result,
                              firmware)
    if write:
        write_result(build_dir / RESULT_FILE, report.to_json())
        report.written = str(build_dir / RESULT_FILE)
    return report


def write_result(path: Path, doc: dict) -> None:
    """Write-then-rename, so the report never reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
