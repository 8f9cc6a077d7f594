"""Post-training quantization of a float PyTorch module with Brevitas' graph tools.

preprocess_for_quantize (trace, fold BatchNorm, optional cross-layer equalization) ->
quantize (quantizers on the input, every Conv/Linear, every ReLU, the output) ->
calibration_mode (activation ranges from the calibration data) -> bias_correction_mode ->
the QONNX export edgekit.qat uses.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EdgekitError, ModelError
from ..progress import track
from .presets import PtqSettings

CALIBRATION_BATCH = 64


def _layer_maps(settings: PtqSettings):
    import brevitas.nn as qnn

    q = settings.quantizers()
    weight = dict(weight_quant=q["weight"], weight_bit_width=settings.weight_bits, bias_quant=q["bias"],
                  return_quant_tensor=True)
    compute = {nn.Conv1d: (qnn.QuantConv1d, weight), nn.Conv2d: (qnn.QuantConv2d, weight),
               nn.Linear: (qnn.QuantLinear, weight)}
    act = {nn.ReLU: (qnn.QuantReLU, dict(act_quant=q["unsigned_act"], return_quant_tensor=True)),
           nn.Sigmoid: (qnn.QuantSigmoid, dict(act_quant=q["unsigned_act"], return_quant_tensor=True)),
           nn.Tanh: (qnn.QuantTanh, dict(act_quant=q["signed_act"], return_quant_tensor=True))}
    identity = {"signed": (qnn.QuantIdentity, dict(act_quant=q["signed_act"], return_quant_tensor=True)),
                "unsigned": (qnn.QuantIdentity, dict(act_quant=q["unsigned_act"], return_quant_tensor=True))}
    return identity, compute, act


def _batches(x: np.ndarray):
    for i in range(0, len(x), CALIBRATION_BATCH):
        yield torch.as_tensor(x[i:i + CALIBRATION_BATCH])


def quantize_module(model: nn.Module, calibration: np.ndarray, settings: PtqSettings) -> nn.Module:
    """The Brevitas-quantized, calibrated copy of ``model`` (a float module in eval mode)."""
    model = model.eval()
    with warnings.catch_warnings():
        # Brevitas warns at import (an optional Hadamard kernel) and its tracer about torch internals
        warnings.simplefilter("ignore")
        from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
        from brevitas.graph.quantize import preprocess_for_quantize, quantize

        try:
            graph = preprocess_for_quantize(model, equalize_iters=settings.equalize_iterations)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelError(f"the PyTorch model cannot be traced by Brevitas' symbolic tracer ({type(e).__name__}: "
                             f"{first}); PTQ needs a model without data-dependent control flow") from None
        identity, compute, act = _layer_maps(settings)
        qmodel = quantize(graph, quant_identity_map=identity, compute_layer_map=compute, quant_act_map=act)
        with torch.no_grad():
            batches = list(_batches(calibration))
            with calibration_mode(qmodel):
                for b in track(batches, "quantize: activation ranges"):
                    qmodel(b)
            if settings.bias_correction:
                with bias_correction_mode(qmodel):
                    for b in track(batches, "quantize: bias correction"):
                        qmodel(b)
    return qmodel.eval()


def check_calibration(calibration: np.ndarray, input_shape: tuple[int, ...] | None, source: str) -> np.ndarray:
    x = np.asarray(calibration)
    if x.dtype.kind not in "fiu" or x.ndim < 2 or len(x) == 0:
        raise EdgekitError(f"{source}: calibration data must be a numeric array (N, ...) of at least one sample, "
                           f"got {x.dtype} {x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise EdgekitError(f"{source}: calibration samples have shape {tuple(x.shape[1:])}, the model's input is "
                           f"{tuple(input_shape)} (without the batch dimension)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise EdgekitError(f"{source}: calibration data contains NaN or infinite values")
    return x


def ptq_torch(model: nn.Module, calibration: np.ndarray, output: Path, settings: PtqSettings,
              source: str = "the PyTorch model") -> Path:
    """Quantize ``model``, calibrate it on ``calibration`` and write QONNX to ``output``."""
    from ..qat.export import export_qonnx

    x = check_calibration(calibration, None, source)
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(x[:1]))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgekitError(f"{source} does not run on the calibration data of shape {x.shape[1:]} ({first})") from None
    qmodel = quantize_module(model, x, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_qonnx(qmodel, torch.as_tensor(x[:1]), output)
