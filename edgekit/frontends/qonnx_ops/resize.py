"""Resize (opset 10+) and Upsample (opset 7 to 9), mode nearest, integer factors -> IR ``resize``.

The op copies codes, so it sits between quantizers without a rescale (a Quant after it is
lowered as usual). Which input index each output index reads is computed here, per spatial
axis, as ONNX defines it: the coordinate transformation (``asymmetric``, ``half_pixel``,
``half_pixel_symmetric``, ``pytorch_half_pixel``, ``align_corners``, ``tf_half_pixel_for_nn``),
then the ``nearest_mode`` rounding, then clamping into the input. Upsample and Resize-10 read
``floor(o / scale)`` (asymmetric; onnxruntime's "simple" mode). The coordinates are computed
twice, exactly (fractions) and in float32 with onnxruntime's formulas (what qonnx executes);
a node where the two disagree is refused, so the table is right for both.

Refused, naming the node and the attribute: modes other than nearest, ``tf_crop_and_resize``,
``antialias``, scales or sizes that are not constants, a factor that is not an integer of at
least 1 on a spatial axis, a batch or channel scale other than 1.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.graph import Tensor
from ..qonnx_lowering import FloatConst, describe, lowering, onnx_attrs

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MAX_FACTOR = 1 << 12          # per axis, like the window limits of convolutions and pools
MAX_OUTPUT_ELEMENTS = 1 << 24  # per sample, like the graph input
MAX_OUTPUT_AXIS = 1 << 16      # per axis: the index tables are computed exactly, element by element


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def default_opset(model) -> int:
    return next((int(o.version) for o in model.model.opset_import if o.domain in ("", "ai.onnx")), 1)


def exact_source(o: int, k: int, in_len: int, out_len: int, coordinate: str, nearest: str) -> int:
    """The input index output index ``o`` reads, from ONNX's definition in exact arithmetic."""
    half = Fraction(1, 2)
    if coordinate == "asymmetric":
        x = Fraction(o, k)
    elif coordinate in ("half_pixel", "half_pixel_symmetric"):  # the symmetric offset is 0 for integer factors
        x = (o + half) / k - half
    elif coordinate == "pytorch_half_pixel":
        x = (o + half) / k - half if out_len > 1 else -half
    elif coordinate == "tf_half_pixel_for_nn":
        x = (o + half) / k
    else:  # align_corners
        x = Fraction(o * (in_len - 1), out_len - 1) if out_len > 1 else Fraction(0)
    lo, frac = math.floor(x), x - math.floor(x)
    if frac == 0:
        i = lo
    elif nearest == "floor":
        i = lo
    elif nearest == "ceil":
        i = lo + 1
    elif nearest == "round_prefer_floor":
        i = lo if frac <= half else lo + 1
    else:  # round_prefer_ceil
        i = lo if frac < half else lo + 1
    return min(max(i, 0), in_len - 1)


def float32_sources(k: int, in_len: int, out_len: int, coordinate: str, nearest: str) -> np.ndarray:
    """The same table as onnxruntime computes it: float32 coordinates, its rounding functions, clamping."""
    f = np.float32
    o = np.arange(out_len, dtype=f)
    s, half = f(k), f(0.5)
    if coordinate == "asymmetric":
        x = o / s
    elif coordinate in ("half_pixel", "half_pixel_symmetric"):
        x = (o + half) / s - half
    elif coordinate == "pytorch_half_pixel":
        x = (o + half) / s - half if out_len > 1 else np.zeros_like(o)
    elif coordinate == "tf_half_pixel_for_nn":
        x = (o + half) / s
    else:  # align_corners
        x = o * (f(in_len) - f(1)) / (f(out_len) - f(1)) if out_len > 1 else np.zeros_like(o)
    x64 = x.astype(np.float64)  # exact: |x| + 0.5 in float64 does not round a float32 value
    away = np.sign(x64) * np.floor(np.abs(x64) + 0.5)  # std::round: half away from zero
    if nearest == "floor":
        i = np.floor(x)
    elif nearest == "ceil":
        i = np.ceil(x)
    elif nearest == "round_prefer_floor":
        i = np.where(x == np.trunc(x) + half, np.floor(x), away)
    else:
        i = away
    return np.clip(i.astype(np.int64), 0, in_len - 1)


def source_table(node, axis_name: str, k: int, in_len: int, out_len: int, coordinate: str, nearest: str) -> list[int]:
    exact = [exact_source(o, k, in_len, out_len, coordinate, nearest) for o in range(out_len)]
    runtime = float32_sources(k, in_len, out_len, coordinate, nearest)
    differ = np.flatnonzero(np.asarray(exact) != runtime)
    if differ.size:
        raise UnsupportedOpError(
            f"{describe(node)}: along {axis_name}, output index {int(differ[0])} reads input {exact[differ[0]]} "
            f"by ONNX's definition but {int(runtime[differ[0]])} in onnxruntime's float32 arithmetic "
            f"({coordinate}, {nearest}); use coordinate_transformation_mode 'asymmetric' with nearest_mode 'floor'")
    return exact


def _constant(lw, node, idx: int, what: str) -> np.ndarray | None:
    """A constant input, None when the input is absent or empty."""
    if idx >= len(node.input) or not node.input[idx]:
        return None
    v = lw.env.get(node.input[idx])
    if not isinstance(v, FloatConst):
        raise UnsupportedOpError(f"{describe(node)}: {what} (input '{node.input[idx]}') must be a constant; "
                                 "edgekit compiles a resize of fixed shape")
    arr = np.asarray(v.value)
    return arr.ravel() if arr.size else None


def resize_parameters(lw, node) -> tuple[np.ndarray | None, np.ndarray | None, str, str]:
    """(scales, sizes, coordinate transformation, nearest mode) of a Resize or Upsample node, full rank."""
    a = onnx_attrs(node)
    opset = default_opset(lw.model)
    mode = _text(a.get("mode", "nearest"))
    if mode != "nearest":
        raise UnsupportedOpError(f"{describe(node)}: mode '{mode}'; edgekit supports mode 'nearest' (a copy of "
                                 "codes), not interpolation, which computes new values between quantizers")
    if node.op_type == "Upsample" or opset < 11:  # no coordinate or rounding attributes: floor(o / scale)
        if node.op_type == "Upsample" and len(node.input) < 2:
            scales = np.asarray(a.get("scales", []), np.float32)  # opset 7: an attribute
        else:
            scales = _constant(lw, node, 1, "the scales")
        if scales is None:
            raise UnsupportedOpError(f"{describe(node)}: no scales")
        return scales.astype(np.float32), None, "asymmetric", "floor"
    coordinate = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    if coordinate not in COORDINATE_MODES:
        raise UnsupportedOpError(f"{describe(node)}: coordinate_transformation_mode '{coordinate}' is not supported "
                                 f"(edgekit supports {', '.join(COORDINATE_MODES)})")
    nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
    if nearest not in NEAREST_MODES:
        raise UnsupportedOpError(f"{describe(node)}: nearest_mode '{nearest}' is not one of {', '.join(NEAREST_MODES)}")
    if int(a.get("antialias", 0)):
        raise UnsupportedOpError(f"{describe(node)}: antialias=1 is not supported (it filters when downsampling; "
                                 "edgekit upsamples by integer factors)")
    if int(a.get("exclude_outside", 0)):
        raise UnsupportedOpError(f"{describe(node)}: exclude_outside=1 is only defined for mode 'cubic'")
    scales = _constant(lw, node, 2, "the scales")
    sizes = _constant(lw, node, 3, "the sizes")
    if (scales is None) == (sizes is None):
        raise UnsupportedOpError(f"{describe(node)}: give exactly one of scales and sizes")
    rank = len(lw.onnx_shape(node.input[0])) + 1
    axes = a.get("axes")
    if axes is not None:  # opset 18: scales/sizes for these axes only
        axes = [int(x) + rank if int(x) < 0 else int(x) for x in axes]
        given = scales if scales is not None else sizes
        if len(set(axes)) != len(axes) or any(not 0 <= x < rank for x in axes) or len(given) != len(axes):
            raise UnsupportedOpError(f"{describe(node)}: axes {list(a['axes'])} do not match the scales or sizes "
                                     f"of {len(given)} values for a rank-{rank} input")
    if scales is not None:
        full = scales.astype(np.float32)
        if axes is not None:
            full = np.ones(rank, np.float32)
            full[axes] = scales.astype(np.float32)
        return full, None, coordinate, nearest
    full_sizes = sizes.astype(np.int64)
    if axes is not None:
        full_sizes = np.asarray((1,) + lw.onnx_shape(node.input[0]), np.int64)
        full_sizes[axes] = sizes.astype(np.int64)
    policy = _text(a.get("keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        raise UnsupportedOpError(f"{describe(node)}: keep_aspect_ratio_policy '{policy}' is not supported; "
                                 "give the output sizes with 'stretch' (the default) or give scales")
    return None, full_sizes, coordinate, nearest


def integer_factors(lw, node, scales, sizes) -> list[int]:
    """The factor of every axis (batch included), refusing anything but integer upsampling."""
    in_full = (1,) + lw.onnx_shape(node.input[0])
    out_full = (1,) + lw.onnx_shape(node.output[0])
    given = scales if scales is not None else sizes
    what = "scales" if scales is not None else "sizes"
    if len(given) != len(in_full):
        raise UnsupportedOpError(f"{describe(node)}: {len(given)} {what} for a rank-{len(in_full)} input")
    factors = []
    for axis, (n_in, n_out, g) in enumerate(zip(in_full, out_full, given)):
        if scales is not None:
            s = float(np.float32(g))
            k = int(s) if math.isfinite(s) and s == int(s) else None
        else:
            k = int(g) // n_in if int(g) % n_in == 0 else None
        if k is None or k < 1 or k > MAX_FACTOR:
            raise UnsupportedOpError(
                f"{describe(node)}: {what} {[float(v) if scales is not None else int(v) for v in given]} give a factor "
                f"of {g if scales is not None else f'{int(g)}/{n_in}'} on axis {axis}; edgekit supports nearest "
                f"upsampling by integer factors from 1 to {MAX_FACTOR}")
        if axis < 2 and k != 1:
            raise UnsupportedOpError(f"{describe(node)}: {what} resize the {'batch' if axis == 0 else 'channel'} "
                                     f"axis (factor {k}); edgekit resizes the spatial axes only")
        # onnxruntime's output size: float32(scale) * input size, truncated
        out_len = int(np.float32(k) * np.float32(n_in)) if scales is not None else int(g)
        if out_len != n_out:
            raise UnsupportedOpError(f"{describe(node)}: axis {axis} of {n_in} becomes {out_len} by the {what} but "
                                     f"the inferred output shape says {n_out}")
        factors.append(k)
    return factors


@lowering("Resize", "Upsample")
def lower_resize(lw, node) -> None:
    x = lw.int_input(node)
    if x.dtype == "int32":
        raise UnsupportedOpError(f"{describe(node)}: {node.op_type} of a layer's int32 accumulator; put a quantizer "
                                 "(e.g. QuantIdentity or QuantReLU) before it")
    rank = len(lw.onnx_shape(node.input[0])) + 1
    if rank not in (3, 4):
        raise UnsupportedOpError(f"{describe(node)}: {node.op_type} of a rank-{rank} tensor; edgekit resizes 1D "
                                 "(N, C, L) and 2D (N, C, H, W) feature maps")
    scales, sizes, coordinate, nearest = resize_parameters(lw, node)
    factors = integer_factors(lw, node, scales, sizes)
    spatial = factors[2:]
    in_hw = (x.shape[0], x.shape[1])  # IR: (H, W, C), 1D maps (1, L, C)
    if rank == 3:
        spatial = [1] + spatial
    out_hw = (in_hw[0] * spatial[0], in_hw[1] * spatial[1])
    if out_hw[0] * out_hw[1] * x.shape[2] > MAX_OUTPUT_ELEMENTS or max(out_hw) > MAX_OUTPUT_AXIS:
        raise UnsupportedOpError(f"{describe(node)}: an output of {out_hw[0]}x{out_hw[1]}x{x.shape[2]}; edgekit "
                                 f"resizes to at most {MAX_OUTPUT_AXIS} per axis and {MAX_OUTPUT_ELEMENTS} "
                                 "elements per sample")
    rows = source_table(node, "the height", spatial[0], in_hw[0], out_hw[0], coordinate, nearest)
    cols = source_table(node, "the width" if rank == 4 else "the length", spatial[1], in_hw[1], out_hw[1],
                        coordinate, nearest)
    if rows == list(range(in_hw[0])) and cols == list(range(in_hw[1])):  # factor 1 everywhere: nothing moves
        lw.env[node.output[0]] = lw.env[node.input[0]]
        return
    out = Tensor(node.output[0], (out_hw[0], out_hw[1], x.shape[2]), x.dtype, x.bits, x.signed, list(x.scale),
                 x.zero_point, x.qmin, x.qmax)
    lw.emit(node, "resize", [x.name], out, rows=rows, cols=cols, scale=spatial,
            method=f"ONNX {node.op_type}, {coordinate}, {nearest}")
