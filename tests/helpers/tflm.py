"""TFLite Micro's Python interpreter (the tflite-micro package, x86-64 Linux), when installed."""
from __future__ import annotations

import numpy as np

NOT_INSTALLED = "tflite-micro (TFLite Micro's Python interpreter, x86-64 Linux) is not installed"


def tflm_runtime():
    """The tflite_micro runtime module, or None."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except Exception:
        return None
    return runtime


def run_tflm(model: bytes, codes: np.ndarray) -> np.ndarray:
    """Output codes of the int8 model for each input vector, one row per vector."""
    it = tflm_runtime().Interpreter.from_bytes(model)
    shape = it.get_input_details(0)["shape"]
    out = []
    for c in codes:
        it.set_input(c.reshape(shape).astype(np.int8), 0)
        it.invoke()
        out.append(np.array(it.get_output(0)).ravel())
    return np.stack(out).astype(np.int64)
