"""What the QONNX lowerings share: the values tracked while lowering, how errors name a node,
the registries of lowerings and pending-op resolvers, and small ONNX helpers.

``edgekit.frontends.qonnx`` (the loader and the core lowerings) and every module of
``edgekit.frontends.qonnx_ops`` import this module; neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ContractError, UnsupportedOpError
from ..registry import Registry

ORIGINAL_NAME_TAG = "edgekit-source-name:"


def describe(node) -> str:
    """How errors name a node: the user's name, the cleaned name and the op type."""
    doc = node.doc_string or ""
    original = doc[len(ORIGINAL_NAME_TAG):] if doc.startswith(ORIGINAL_NAME_TAG) else ""
    if original and original != node.name:
        return f"node '{original}' ({node.op_type}, '{node.name}' after qonnx cleanup)"
    return f"node '{node.name}' ({node.op_type})"


# ---------------------------------------------------------------------------------------
# Values tracked during lowering
# ---------------------------------------------------------------------------------------
@dataclass
class FloatInput:
    """The float graph input before its input quantizer, with the float-domain ops
    (reshape/transpose, per sample) applied to it so far; the host replays them."""
    shape: tuple[int, ...]
    pre_ops: tuple = ()


@dataclass
class FloatConst:
    value: np.ndarray


@dataclass
class QuantConst:
    """A constant already quantized by a Quant node: integer codes and their grid."""
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool


@dataclass
class IntValue:
    """An IR integer tensor. ``pending`` is a float op applied to it (clip, elementwise
    function, softmax, average pool) that only a following Quant turns back into integers."""
    tensor: str
    pending: tuple | None = None


def ir_shape(onnx_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample IR shape: feature maps are channels-last, 1D maps are (1, L, C)."""
    if len(onnx_shape) == 3:
        c, h, w = onnx_shape
        return (h, w, c)
    if len(onnx_shape) == 2:
        c, length = onnx_shape
        return (1, length, c)
    return tuple(onnx_shape)


def channels_last_perm(onnx_shape: tuple[int, ...]) -> np.ndarray | None:
    """perm with ir_flat[i] == onnx_flat[perm[i]] for a flattened feature map (None if identical)."""
    if len(onnx_shape) not in (2, 3):
        return None
    n = int(np.prod(onnx_shape))
    idx = np.arange(n).reshape(onnx_shape)
    perm = np.moveaxis(idx, 0, -1).ravel()
    return None if np.array_equal(perm, np.arange(n)) else perm


# ---------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------
LOWERINGS: Registry[Callable] = Registry("QONNX lowering of ONNX op")


def lowering(*op_types: str):
    """Register the decorated function as the lowering of these ONNX op types (each exactly once)."""
    def deco(fn):
        LOWERINGS.add_all(op_types, fn)
        return fn
    return deco


def onnx_attrs(node) -> dict:
    """An ONNX node's attributes as a dict of Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# The pending float chain (BatchNorm, Relu) on an accumulator that a following low-bit Quant
# turns into integer thresholds (qonnx_ops/threshold.py); qonnx.py's Relu joins it.
THRESHOLD_CHAIN = "BatchNorm before a low-bit quantizer"

# Pending float ops that the following Quant resolves; each module registers its resolver.
PENDING_RESOLVERS: Registry[Callable] = Registry("resolver of the pending float op")


def resolves(kind: str):
    """Register the decorated function as the resolver of pending float ops of this kind."""
    def deco(fn):
        PENDING_RESOLVERS.add(kind, fn)
        return fn
    return deco


def bias_codes(lw, node, name: str, acc_scale: np.ndarray) -> np.ndarray:
    """The integer codes of a quantized bias, which must sit on the accumulator grid ``acc_scale``."""
    b = lw.env.get(name)
    if isinstance(b, FloatConst):  # a float bias (published FINN models): rounded onto the accumulator grid
        value = np.broadcast_to(np.asarray(b.value, np.float64).ravel(), acc_scale.shape)
        codes = np.round(value / acc_scale)
        if np.any(np.abs(codes) > 2**31 - 1):
            raise ContractError(f"{describe(node)}: the float bias does not fit int32 on the accumulator's grid")
        if np.any(codes * acc_scale != value):
            lw.inexact.append(f"{describe(node)}: float bias rounded to the accumulator grid (export it with "
                              "bias_quant=Int32Bias for an exact model)")
        return codes.astype(np.int64)
    if not isinstance(b, QuantConst):
        raise UnsupportedOpError(f"{describe(node)}: the bias must be a constant")
    b_scale = np.broadcast_to(np.ravel(b.scale).astype(np.float64), acc_scale.shape)
    ratio = b_scale / acc_scale
    if not np.any(b.zero_point != 0) and np.all(ratio >= 2) and np.array_equal(ratio, np.round(ratio)):
        # a bias quantized on a coarser grid of its own (QKeras, Brevitas' internal-scaling bias) whose
        # steps are whole accumulator steps (powers of two): its codes times the ratio, exactly
        codes = np.broadcast_to(np.ravel(b.codes), acc_scale.shape).astype(np.int64) * ratio.astype(np.int64)
        if np.any(np.abs(codes) > 2**31 - 1):
            raise ContractError(f"{describe(node)}: the bias does not fit int32 on the accumulator's grid")
        return codes
    if np.any(b.zero_point != 0) or not np.allclose(b_scale, acc_scale, rtol=1e-6, atol=0):
        raise ContractError(
            f"{describe(node)}: the bias scale {b_scale[0]:.6g} is not input scale x "
            f"weight scale ({acc_scale[0]:.6g}), so the bias cannot be added to the int32 accumulator "
            "exactly; use bias_quant=Int32Bias")
    codes = np.broadcast_to(np.ravel(b.codes), acc_scale.shape).astype(np.int64)
    if b.bits > 32:
        raise ContractError(f"{describe(node)}: {b.bits}-bit bias does not fit int32")
    return codes


def sign_flipped_layer(lw, prod, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights and bias of the dense/conv ``prod`` with output channel c multiplied by
    ``sign[c]`` (a negative BatchNorm gamma folded into the layer), and those weights as
    [out, fan_in] rows for the accumulator bound."""
    w = lw.constants[prod.inputs[1]].astype(np.int64)
    ch_axis = -1 if (prod.op == "conv2d" and prod.attrs["depthwise"]) else 0
    shape = [1] * w.ndim
    shape[ch_axis] = -1
    w = w * sign.reshape(shape)
    b = lw.constants[prod.inputs[2]].astype(np.int64) * sign
    rows = w.reshape(-1, w.shape[-1]).T if ch_axis == -1 else w.reshape(w.shape[0], -1)
    return w, b, rows
