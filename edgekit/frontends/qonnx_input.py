"""The input quantizer of a graph whose first layer reads the float input directly, derived
from the input's datatype annotation (FINN, qonnx: ``ModelWrapper.set_tensor_datatype``),
e.g. the UNSW-NB15 MLP's BIPOLAR input mapped by ``(x + 1) / 2`` to {0, 1}, or fixed by the
user (``edgekit build --input-bits N --calibration x.npy``: QKeras models converted with
``qonnx.converters.from_keras`` quantize weights and activations but not the input), see
:func:`calibrated_input_quant`.

The annotated values, passed through the float pre-processing (scalar steps only), must
form an evenly spaced grid ``scale * q`` with integer ``q``: the host quantizes onto it
(round to nearest, clamp). qonnx computes on the float input as given, so verify feeds it the
grid points the codes stand for (``InputQuant.annotation``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import contract
from ..ir.graph import INVERSE_STEPS, InputQuant, Tensor, apply_float_steps, apply_pre_ops
from .qonnx_lowering import IntValue, describe, ir_shape


def annotated_values(model, name: str) -> tuple[str, np.ndarray] | None:
    """The annotated datatype of a graph input and its values, or None (float or unannotated)."""
    dt = model.get_tensor_datatype(name)
    if dt is None or not dt.is_integer():
        return None
    if dt.bitwidth() > 16:
        return None
    step = 2 if dt.name == "BIPOLAR" else 1
    return dt.name, np.arange(int(dt.min()), int(dt.max()) + 1, step, dtype=np.float64)


@dataclass(frozen=True)
class FixedInput:
    """``--input-bits N --calibration x.npy``: the input quantizer for a float input the graph does not quantize."""

    bits: int
    calibration: np.ndarray  # float samples in the model's input layout, (N, *input shape) or one sample
    source: str  # where the calibration came from (the file), for messages

    @property
    def annotation(self) -> str:
        return f"--input-bits {self.bits}"


def calibrated_input_quant(fixed: FixedInput, float_shape: tuple, pre_ops: list) -> InputQuant:
    """A power-of-two input quantizer of ``fixed.bits`` bits covering the calibration data.

    The data passes through the float pre-processing the quantizer sees (``pre_ops``); it is signed
    when any value is negative (codes -2^(N-1) .. 2^(N-1)-1, else 0 .. 2^N-1), and the scale is the
    smallest power of two with ``max|x| <= scale * qmax``, so no calibration value saturates and
    the codes are exactly an ``ap_fixed`` type's values.
    """
    x = np.asarray(fixed.calibration)
    if x.dtype.kind not in "fiu" or x.size == 0:
        raise UnsupportedOpError(f"{fixed.source}: --calibration must hold numbers (float samples in the model's "
                                 f"input layout {tuple(float_shape)}), got an empty or {x.dtype} array")
    per_sample = int(np.prod(float_shape))
    if x.size % per_sample or (x.shape[1:] != tuple(float_shape) and x.shape != tuple(float_shape)):
        raise UnsupportedOpError(f"{fixed.source}: --calibration has shape {x.shape}; give (N, "
                                 f"{', '.join(str(d) for d in float_shape)}) float samples in the model's input layout")
    if not np.all(np.isfinite(x)):
        raise UnsupportedOpError(f"{fixed.source}: --calibration holds inf or nan values")
    bits = int(fixed.bits)
    probe = InputQuant(tuple(float_shape), 1.0, 0, 0, 1, max(bits, 1), False, list(pre_ops))
    v = np.asarray(apply_pre_ops(probe, x.reshape((-1, *float_shape)).astype(np.float32)), np.float64)
    signed = bool(v.min() < 0)
    if not 1 + signed <= bits <= 16:
        raise UnsupportedOpError(f"--input-bits {bits}: choose 2 to 16 bits for signed calibration data "
                                 "(it has negative values), 1 to 16 for non-negative data")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    max_abs = float(np.max(np.abs(v)))
    if max_abs == 0.0:
        raise UnsupportedOpError(f"{fixed.source}: the calibration data is all zeros after the input's float "
                                 "pre-processing, so it fixes no input scale; give representative samples")
    scale = 2.0 ** math.ceil(math.log2(max_abs / qmax))
    while max_abs > scale * qmax:  # log2 rounding at an exact power of two
        scale *= 2.0
    return InputQuant(tuple(float_shape), scale, 0, qmin, qmax, bits, signed, list(pre_ops),
                      annotation=fixed.annotation)


def quantize_annotated_input(lw, node, idx: int, src) -> None:
    """Make the input quantizer of the float input ``src`` that ``node`` computes on."""
    graph_input = lw.model.graph.input[0].name
    found = annotated_values(lw.model, graph_input)
    fixed = getattr(lw, "fixed_input", None)
    if fixed is not None:
        if found is not None:
            raise UnsupportedOpError(f"--input-bits: the input '{graph_input}' is annotated {found[0]}, which fixes "
                                     "its quantizer; leave out --input-bits and --calibration")
        pre_ops = _layout_pre_ops(lw, node, idx, src)
        _set_input(lw, node, idx, calibrated_input_quant(fixed, lw.float_input_shape, pre_ops))
        return
    if found is None:
        raise UnsupportedOpError(
            f"{describe(node)}: reads the float input without an input quantizer (a QKeras-style model); build "
            "with --input-bits N --calibration x.npy (a power-of-two input quantizer of N bits covering the "
            "calibration samples, docs/limits.md), or put a Quant node (Brevitas QuantIdentity) before it, or "
            f"annotate the input's integer datatype (qonnx: model.set_tensor_datatype('{graph_input}', "
            "DataType['INT8']))")
    dtype_name, values = found
    steps = [(op, arg) for op, arg in src.pre_ops if op in INVERSE_STEPS]
    if any(np.asarray(arg).size != 1 for _, arg in steps):
        raise UnsupportedOpError(f"{describe(node)}: float pre-processing with per-element constants on an "
                                 f"annotated ({dtype_name}) input; edgekit maps the annotation through scalar steps")
    grid = apply_float_steps(values, steps).astype(np.float64)
    if len(grid) < 2:
        raise UnsupportedOpError(f"{describe(node)}: the input's datatype {dtype_name} has a single value")
    scale = float(grid[1] - grid[0])
    codes = grid / scale if scale > 0 else grid
    if scale <= 0 or not np.array_equal(codes, np.round(codes)) or not np.all(np.diff(codes) == 1):
        raise UnsupportedOpError(f"{describe(node)}: the {dtype_name} input after its float pre-processing takes "
                                 f"values {grid.tolist()[:4]}..., not an evenly spaced integer multiple of one scale")
    qmin, qmax = int(codes[0]), int(codes[-1])
    signed = qmin < 0
    bits = max(1, int(max(abs(qmin), abs(qmax))).bit_length() + int(signed))
    _set_input(lw, node, idx, InputQuant(lw.float_input_shape, scale, 0, qmin, qmax, bits, signed,
                                         _layout_pre_ops(lw, node, idx, src), annotation=dtype_name))


def _layout_pre_ops(lw, node, idx: int, src) -> list:
    """The float input's pre-ops, then channels last for a feature map (the IR's layout)."""
    shape = lw.onnx_shape(node.input[idx])
    pre_ops = list(src.pre_ops)
    if len(shape) in (2, 3):
        pre_ops.append(("to_channels_last", list(shape)))
    return pre_ops


def _set_input(lw, node, idx: int, iq: InputQuant) -> None:
    """Make ``iq`` the graph's input quantizer and its codes the IR input ``node`` reads."""
    lw.input_quant = iq
    dtype = contract.storage_dtype(iq.bits, iq.signed, describe(node))
    name = node.input[idx]
    lw.ir_input = lw.add_tensor(Tensor(name, ir_shape(lw.onnx_shape(name)), dtype, iq.bits, iq.signed, [iq.scale], 0,
                                       iq.qmin, iq.qmax))
    lw.env[name] = IntValue(name)
