"""Float arithmetic by constants around the integer core: Mul, Div, Sub (and Add, which
``add.py`` routes here when one side is the float input or such a float map).

- On the float graph input, before its quantizer (FINN's TFC does ``x * 2 - 1``, the
  UNSW-NB15 MLP ``(x + 1) / 2``): a host-side step of the input quantizer, replayed in
  float32 exactly as qonnx computes it (``InputQuant.pre_ops``).
- On a layer's int32 accumulator (BatchNorm exported as Sub/Div/Mul/Add): kept pending as a
  per-channel affine map ``acc * s * k + h``. The next Quant folds it into the layer like
  BatchNormalization (``batchnorm.fold_affine``: rounded to the accumulator grid, reported
  inexact); at the graph's end it becomes the host-side output description
  (``graph.meta["output_post_ops"]``), applied to the output in float32 like qonnx does.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ..qonnx_lowering import FloatConst, FloatInput, IntValue, describe, lowering, resolves
from .batchnorm import fold_affine

STEP_OF_OP = {"Mul": "mul", "Div": "div", "Sub": "sub", "Add": "add"}


def is_float_arith(lw, node) -> bool:
    """An elementwise op between a constant and the float input or a pending affine map."""
    values = [lw.env.get(i) for i in node.input[:2]]
    if not any(isinstance(v, FloatConst) for v in values):
        return False
    return any(isinstance(v, FloatInput) or (isinstance(v, IntValue) and v.pending is not None
                                              and v.pending[0] == "affine") for v in values)


@lowering("Mul", "Div", "Sub")
def lower_float_arith(lw, node) -> None:
    step = STEP_OF_OP[node.op_type]
    a, b = (lw.env.get(i) for i in node.input[:2])
    if isinstance(b, FloatConst) and not isinstance(a, FloatConst):
        src_name, const = node.input[0], b.value
    elif isinstance(a, FloatConst) and not isinstance(b, FloatConst) and step in ("mul", "add"):
        src_name, const = node.input[1], a.value
    else:
        raise UnsupportedOpError(f"{describe(node)}: {node.op_type} of two tensors (or of a constant by a "
                                 f"tensor); edgekit supports {node.op_type} of a tensor by a constant")
    const = np.asarray(const, np.float32)
    if not np.all(np.isfinite(const)) or (step == "div" and np.any(const == 0)):
        raise UnsupportedOpError(f"{describe(node)}: the constant must be finite (and nonzero for Div)")
    src = lw.env.get(src_name)
    if isinstance(src, FloatInput):
        full = (1,) + tuple(src.shape)
        if const.ndim > len(full) or np.broadcast_shapes(full, const.shape) != full:
            raise UnsupportedOpError(f"{describe(node)}: the constant of shape {list(const.shape)} does not "
                                     f"broadcast over the input's shape {list(full)}")
        # kept with its shape: numpy broadcasts it over (N, ...) exactly as ONNX does
        lw.env[node.output[0]] = FloatInput(src.shape, src.pre_ops + ((step, const.tolist()),))
        return
    if isinstance(src, IntValue) and (src.pending is None or src.pending[0] == "affine"):
        t = lw.tensors[src.tensor]
        if src.pending is None and t.dtype != "int32":
            raise UnsupportedOpError(
                f"{describe(node)}: {node.op_type} of a quantized activation by a constant; edgekit folds "
                "float arithmetic into the float input's quantizer or into a layer's accumulator (e.g. "
                "BatchNorm exported as Sub/Div/Mul/Add), not between quantizers")
        per_channel = channel_vector(lw, node, src_name, const)
        steps = (src.pending[1] if src.pending else ()) + ((step, per_channel),)
        lw.env[node.output[0]] = IntValue(src.tensor, ("affine", steps))
        return
    raise UnsupportedOpError(f"{describe(node)}: {node.op_type} of an unquantized "
                             f"{src.pending[0] if isinstance(src, IntValue) else 'value'}")


def channel_vector(lw, node, name: str, const: np.ndarray) -> list[float]:
    """A constant broadcast over a layer's output as one value per channel (or one value)."""
    if const.size == 1:
        return [float(const.ravel()[0])]
    onnx_shape = lw.onnx_shape(name)
    channels = onnx_shape[0]
    squeezed = [d for d in const.shape if d != 1]
    # the channel axis is ONNX axis 1 (after the batch), so the constant has shape (..., C, 1, ..., 1)
    trailing = const.shape[len(const.shape) - len(onnx_shape):] if const.ndim >= len(onnx_shape) else None
    if squeezed == [channels] and (len(onnx_shape) == 1 or (trailing is not None and trailing[0] == channels)):
        return [float(v) for v in const.ravel()]
    raise UnsupportedOpError(f"{describe(node)}: a constant of shape {list(const.shape)} on a tensor of shape "
                             f"{list(onnx_shape)}; edgekit folds one value or one value per channel")


def affine_of(steps) -> tuple[np.ndarray, np.ndarray]:
    """(k, h) with steps(y) == y * k + h (float64, per channel)."""
    k, h = np.ones(1), np.zeros(1)
    for step, c in steps:
        c = np.asarray(c, np.float64)
        if step == "mul":
            k, h = k * c, h * c
        elif step == "div":
            k, h = k / c, h / c
        elif step == "add":
            h = h + c
        else:
            h = h - c
    return k, h


@resolves("affine")
def resolve_affine(lw, node, v, out) -> None:
    """The Quant after a float affine map on an accumulator: folded into the layer, then requantized."""
    t = lw.tensors[v.tensor]
    prod = next((n for n in lw.nodes if t.name in n.outputs), None)
    if prod is None or prod.op not in ("dense", "conv2d") or prod.attrs.get("requant") is not None:
        raise UnsupportedOpError(f"{describe(node)}: float arithmetic before this quantizer must directly follow "
                                 "a quantized Conv or Gemm")
    k, h = affine_of(v.pending[1])
    fold_affine(lw, node, prod, t, k, h)
    rq = contract.requant_for_scales(np.asarray(t.scale), out.scale[0], out.zero_point, out.qmin, out.qmax)
    lw.emit(node, "requantize", [t.name], out, requant=rq)
