"""RESIZE_NEAREST_NEIGHBOR (integer factors) -> IR ``resize``.

The input index each output index reads is TFLite Micro's reference kernel's
(``GetNearestNeighbor``), computed in float32 as it does: ``scale = in / out`` (with
``align_corners``: ``(in - 1) / (out - 1)``), ``offset = 0.5`` with ``half_pixel_centers``,
then ``floor((o + offset) * scale)`` (``align_corners``: rounded half away from zero), at most
``in - 1`` and, with ``half_pixel_centers``, at least 0. The output size must be an integer
multiple of the input size on both axes; input and output share one quantization (the
kernel copies codes).
"""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ..operands import op_inputs
from ..registry import lowering

MAX_FACTOR = 1 << 12


def tflm_sources(in_len: int, out_len: int, align_corners: bool, half_pixel_centers: bool) -> list[int]:
    """TFLite Micro's input index for each output index along one axis (float32 arithmetic)."""
    f = np.float32
    if align_corners and out_len > 1:
        scale = f(in_len - 1) / f(out_len - 1)
    else:
        scale = f(in_len) / f(out_len)
    offset = f(0.5) if half_pixel_centers else f(0.0)
    x = (np.arange(out_len, dtype=f) + offset) * scale
    if align_corners:
        x64 = x.astype(np.float64)  # half away from zero (TfLiteRound), exact on float32 values
        i = np.floor(x64 + 0.5)
    else:
        i = np.floor(x)
    i = np.minimum(i.astype(np.int64), in_len - 1)
    if half_pixel_centers:
        i = np.maximum(i, 0)
    return i.tolist()


@lowering("RESIZE_NEAREST_NEIGHBOR")
def lower_resize_nearest(lw, op, name: str, where: str) -> None:
    ins = op_inputs(op)
    if len(ins) != 2:
        raise ModelError(f"{where}: {len(ins)} inputs (expected the input and the output size)")
    x = lw.act(where, ins[0])
    if len(x.shape) != 3:
        raise UnsupportedOpError(f"{where}: input of shape {list(x.shape)}; expected N x H x W x C")
    size = lw.int_value(where, ins[1], "output size").ravel()
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    ih, iw, c = x.shape
    if size.size != 2 or tuple(int(s) for s in size) != tuple(out.shape[:2]) or out.shape[2] != c:
        raise ModelError(f"{where}: output size {size.tolist()} disagrees with the output tensor's shape "
                         f"{list(out.shape)}")
    oh, ow = int(size[0]), int(size[1])
    factors = []
    for axis, n_in, n_out in (("height", ih, oh), ("width", iw, ow)):
        if n_out % n_in or not 1 <= n_out // n_in <= MAX_FACTOR:
            raise UnsupportedOpError(f"{where}: the {axis} goes from {n_in} to {n_out}; edgekit supports nearest "
                                     f"upsampling by integer factors from 1 to {MAX_FACTOR}")
        factors.append(n_out // n_in)
    if abs(np.float32(x.scale[0]) - np.float32(out.scale[0])) > 1e-6 or x.zero_point != out.zero_point:
        raise UnsupportedOpError(f"{where}: input and output quantization differ (the kernel copies codes)")
    o = lw.options(op, lw.tfl.ResizeNearestNeighborOptions, where)
    align, half = bool(o.AlignCorners()), bool(o.HalfPixelCenters())
    rows = tflm_sources(ih, oh, align, half)
    cols = tflm_sources(iw, ow, align, half)
    modes = [m for m, on in (("align_corners", align), ("half_pixel_centers", half)) if on]
    lw.emit(name, "resize", [x.name], out, oidx, rows=rows, cols=cols, scale=factors,
            method=f"TFLite RESIZE_NEAREST_NEIGHBOR{', ' + ', '.join(modes) if modes else ''}")
