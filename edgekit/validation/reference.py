"""The float reference of a validation: a float ONNX model run with onnxruntime (``--float-model``),
or, for a QONNX build, qonnx's execution of the build's QONNX graph (its quantizers computed in
float arithmetic: the dequantized model, what Brevitas' forward pass gives)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VerificationError
from ..stages import run_qonnx

#: float elements of the input a qonnx or onnxruntime batch may hold (bounds their memory)
REFERENCE_BATCH_ELEMENTS = 1 << 22


def batches(n: int, per_sample: int) -> list[slice]:
    step = max(1, min(n, REFERENCE_BATCH_ELEMENTS // max(1, per_sample)))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def to_ir_order(y: np.ndarray, channels_first: bool) -> np.ndarray:
    """A model's outputs as (N, K) in the IR's order (channels last), like verify's qonnx stage."""
    if channels_first and y.ndim in (3, 4):
        y = np.moveaxis(y, 1, -1)
    return y.reshape(y.shape[0], -1)


def qonnx_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    """qonnx's execution of the QONNX graph on float inputs, in batches: (N, K) float64."""
    per = int(np.prod(x.shape[1:]))
    return np.concatenate([to_ir_order(run_qonnx(model_path, x[s]), True) for s in batches(len(x), per)]
                          ).astype(np.float64)


def onnx_outputs(model_path: Path, x: np.ndarray, channels_first: bool) -> np.ndarray:
    """A float ONNX model's first output on float inputs (the model's input layout): (N, K) float64.

    A model whose batch dimension is fixed at 1 runs one sample at a time."""
    import onnxruntime as ort

    if not Path(model_path).is_file():
        raise VerificationError(f"{model_path}: no such float model")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings are not the user's problem
        sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's many error types: one line naming the file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
        raise VerificationError(f"{model_path}: onnxruntime cannot load the float model ({first}); --float-model "
                                "takes a float ONNX file") from None
    inp = sess.get_inputs()[0]
    if "float" not in inp.type:
        raise VerificationError(f"{model_path}: the float model's input '{inp.name}' is {inp.type}, not a float "
                                "tensor; --float-model takes a float ONNX model")
    per_sample = inp.shape[0] == 1
    shape = [d if isinstance(d, int) else -1 for d in inp.shape[1:]]
    if all(isinstance(d, int) for d in inp.shape[1:]) and int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise VerificationError(f"{model_path}: the float model's input '{inp.name}' has shape {inp.shape}, but a "
                                f"sample of the data has shape {list(x.shape[1:])}")
    ranges = ([slice(i, i + 1) for i in range(len(x))] if per_sample
              else batches(len(x), int(np.prod(x.shape[1:]))))
    out = []
    try:
        for s in ranges:
            xb = x[s].astype(np.float32)
            if -1 not in shape:
                xb = xb.reshape((len(xb),) + tuple(shape))
            out.append(to_ir_order(np.asarray(sess.run(None, {inp.name: xb})[0]), channels_first))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
        raise VerificationError(f"{model_path}: onnxruntime cannot run the float model on the data ({first})") \
            from None
    return np.concatenate(out).astype(np.float64)
