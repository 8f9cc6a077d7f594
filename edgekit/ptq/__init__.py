"""Post-training quantization: a float model plus calibration data -> a model edgekit builds.

* a PyTorch ``nn.Module`` (Python API only: a ``.pt`` path would have to be unpickled) or a
  float ONNX file: Brevitas' PTQ (``torch_ptq``; ONNX through ``onnx_float``) -> QONNX;
* a Keras model (``.keras``) or ``keras.Model``: TensorFlow's TFLite converter with the
  calibration data as its representative dataset -> full-integer int8 ``.tflite``.

``edgekit.api.quantize`` and ``edgekit quantize`` (``cli.py``) call :func:`quantize_model`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arrays import load_npy
from ..errors import EdgekitError
from .presets import SCALES, WEIGHT_BITS, PtqSettings, default_scales

__all__ = ["SCALES", "WEIGHT_BITS", "PtqSettings", "QuantizeResult", "load_calibration", "quantize_model",
           "run_quantize"]

MAX_CALIBRATION_BYTES = 1 << 30


@dataclass
class QuantizeResult:
    path: Path  # the QONNX (.onnx) or int8 TFLite (.tflite) file written
    kind: str  # "qonnx" or "tflite"
    source: str
    settings: PtqSettings
    calibration_samples: int

    def summary(self) -> str:
        how = "Brevitas PTQ -> QONNX" if self.kind == "qonnx" else "TFLite converter -> int8 TFLite"
        what = self.settings.describe() if self.kind == "qonnx" else \
            f"int8 weights ({'per channel' if self.settings.per_channel else 'per tensor'}) and activations, float scales"
        return (f"quantized {self.source} ({how}; {what}) with {self.calibration_samples} calibration samples: "
                f"wrote {self.path}; next: edgekit build {self.path} --target ... --board ...")

    def to_json(self) -> dict:
        return {"output": str(self.path), "format": self.kind, "source": self.source,
                "weight_bits": self.settings.weight_bits, "scales": self.settings.scales,
                "per_channel": self.settings.per_channel, "calibration_samples": self.calibration_samples}


def load_calibration(path: str | Path) -> np.ndarray:
    """A calibration array from a ``.npy`` file (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{path}: calibration data not found (a .npy array of float samples, (N, ...) in the "
                           "model's input layout)")
    if path.stat().st_size > MAX_CALIBRATION_BYTES:
        raise EdgekitError(f"{path}: {path.stat().st_size} bytes of calibration data; at most "
                           f"{MAX_CALIBRATION_BYTES} (a few hundred samples are enough)")
    return load_npy(path, "calibration data")


def _kind_of(model) -> str:
    if isinstance(model, (str, Path)):
        suffix = Path(model).suffix.lower()
        if suffix == ".onnx":
            return "onnx"
        if suffix == ".keras":
            return "keras"
        if suffix in (".pt", ".pth", ".pkl", ".ckpt", ".bin"):
            raise EdgekitError(f"{model}: edgekit does not load pickled PyTorch files (unpickling runs code); pass "
                               "the nn.Module to edgekit.api.quantize, or export it to ONNX (torch.onnx.export)")
        if suffix in (".h5", ".hdf5"):
            raise EdgekitError(f"{model}: legacy HDF5 Keras files are not read; save the model as .keras")
        raise EdgekitError(f"{model}: unknown model format '{suffix}'; edgekit quantizes .onnx (float ONNX) and "
                           ".keras files, and PyTorch modules through the Python API")
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            return "torch"
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    if type(model).__module__.split(".")[0] in ("keras", "tensorflow", "tf_keras"):
        return "keras-model"
    raise EdgekitError(f"cannot quantize a {type(model).__name__}: pass a torch.nn.Module, a keras.Model, or the "
                       "path of a float .onnx or .keras file")


def run_quantize(model, calibration, output: str | Path, settings: PtqSettings) -> QuantizeResult:
    """Quantize ``model`` (see the module docstring) with ``calibration`` (an array, or the path of a
    ``.npy`` file) and write ``output``: ``.onnx`` (QONNX) for PyTorch and ONNX, ``.tflite`` for Keras."""
    kind = _kind_of(model)
    source = str(model) if isinstance(model, (str, Path)) else f"the {type(model).__name__} model"
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise EdgekitError(f"{model}: model file not found")
    x = load_calibration(calibration) if isinstance(calibration, (str, Path)) else np.asarray(calibration)
    output = Path(output)
    want = ".tflite" if kind.startswith("keras") else ".onnx"
    if output.suffix.lower() != want:
        raise EdgekitError(f"{output}: a {'Keras' if want == '.tflite' else kind} model is quantized to a "
                           f"{want} file; name the output *{want}")
    if output.is_dir():
        raise EdgekitError(f"{output}: is a directory; name the output file")
    if kind == "torch":
        from .torch_ptq import ptq_torch

        ptq_torch(model, x, output, settings, source)
    elif kind == "onnx":
        from .onnx_float import check_conversion, onnx_to_torch
        from .torch_ptq import check_calibration, ptq_torch

        module, shape = onnx_to_torch(Path(model))
        x = check_calibration(x, shape, source)
        check_conversion(Path(model), module, x)
        ptq_torch(module, x, output, settings, source)
    else:
        from .keras_tflite import check_keras_settings, load_keras, ptq_keras

        check_keras_settings(settings, source)
        ptq_keras(load_keras(Path(model)) if kind == "keras" else model, x, output, settings, source)
    return QuantizeResult(output, "tflite" if want == ".tflite" else "qonnx", source, settings, int(len(x)))


def quantize_model(model, calibration, output: str | Path, *, weight_bits: int = 8, scales: str | None = None,
                   per_channel: bool = False, equalize: int = 0, bias_correction: bool = True) -> QuantizeResult:
    """edgekit.api.quantize (documented there) and ``edgekit quantize``."""
    settings = PtqSettings(weight_bits=weight_bits, scales=scales or default_scales(model), per_channel=per_channel,
                           equalize_iterations=equalize, bias_correction=bias_correction)
    return run_quantize(model, calibration, output, settings)
