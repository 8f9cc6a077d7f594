"""Post-training quantization of a float Keras model with TensorFlow's TFLite converter.

Full-integer quantization with a representative dataset (the calibration data): int8 weights
(per channel unless asked otherwise) and activations, int32 biases, int8 input and output.
The ``.tflite`` it writes takes edgekit's TFLite path (TFLite Micro's arithmetic), and
``edgekit verify`` compares it with TFLite Micro's own interpreter.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ..errors import EdgekitError, ModelError
from .presets import PtqSettings


def _tensorflow():
    # TensorFlow's C++ start-up lines (CPU features, the oneDNN notice) say nothing to an edgekit
    # user; a user's own settings win.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        raise EdgekitError("quantizing a Keras model needs TensorFlow: pip install 'edgekit[keras]' "
                           "(or tensorflow-cpu)") from None
    return tf


def check_keras_settings(settings: PtqSettings, source: str) -> None:
    """The TFLite converter's int8 scheme: float scales, 8-bit weights."""
    if settings.power_of_two:
        raise EdgekitError(f"{source}: --scales pow2 is not available for Keras models (the TFLite converter "
                           "chooses float scales); use --scales float")
    if settings.weight_bits != 8:
        raise EdgekitError(f"{source}: --weight-bits {settings.weight_bits} is not available for Keras models "
                           "(TFLite's integer kernels take int8 weights); use --weight-bits 8")
    if not settings.bias_correction:
        raise EdgekitError(f"{source}: --no-bias-correction applies to PyTorch and ONNX models (Brevitas), not to "
                           "Keras models")
    if settings.equalize_iterations:
        raise EdgekitError(f"{source}: --equalize applies to PyTorch and ONNX models (Brevitas), not to Keras models")


def load_keras(path: Path):
    import zipfile

    # checked before TensorFlow starts (seconds, and log lines of its own)
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: cannot load the Keras model (not a .keras zip archive; save it with "
                         "model.save('model.keras'))")
    tf = _tensorflow()
    try:
        # safe_mode (the default, spelled out): a .keras file with a serialized Python lambda is refused
        # instead of executed
        return tf.keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path}: cannot load the Keras model ({type(e).__name__}: {first[:300]})") from None


def ptq_keras(model, calibration: np.ndarray, output: Path, settings: PtqSettings,
              source: str = "the Keras model") -> Path:
    """Full-integer int8 TFLite model of ``model`` (a keras.Model), written to ``output``."""
    tf = _tensorflow()
    check_keras_settings(settings, source)
    from .torch_ptq import check_calibration

    shape = tuple(int(d) for d in model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if shape is None or any(d <= 0 for d in shape):
        raise ModelError(f"{source}: edgekit compiles models with one input of a fixed shape")
    x = check_calibration(calibration, shape, source)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if not settings.per_channel:
        conv._experimental_disable_per_channel = True  # the converter's only switch for per-tensor weights
    try:
        with _converter_output_quiet():
            flatbuffer = conv.convert()
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{source}: the TFLite converter failed ({type(e).__name__}: {first[:300]})") from None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(flatbuffer)
    return output


@contextlib.contextmanager
def _converter_output_quiet():
    """The converter prints its SavedModel's signature on stdout (which carries ``--json``),
    its C++ settings on stderr, and warns that the inputs have no statistics (it computes them
    from the representative data). Its failures raise, with their message, so the writes are
    dropped at the file descriptors for the duration of the call."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
