"""SHAPE, STRIDED_SLICE and PACK on static shapes, evaluated at import time."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ..operands import op_inputs
from ..registry import lowering


# Shape arithmetic. Keras 3's Flatten exports ``RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x)), -1))``
# so that the batch size stays dynamic. edgekit's shapes are static (batch 1), so these int32
# operators are evaluated once here; nothing of them reaches the IR or the firmware.
@lowering("SHAPE")
def fold_shape(lw, op, name: str, where: str) -> None:
    i = op_inputs(op)[0]
    lw.fold(where, op, np.array(lw.t[i].shape, np.int64))


@lowering("STRIDED_SLICE")
def fold_strided_slice(lw, op, name: str, where: str) -> None:
    ins = op_inputs(op)
    if len(ins) != 4:
        raise UnsupportedOpError(f"{where}: {len(ins)} inputs (expected input, begin, end, strides)")
    x = lw.int_value(where, ins[0], "input")
    begin, end, strides = (lw.int_value(where, i, what).ravel()
                           for i, what in zip(ins[1:], ("begin", "end", "strides")))
    o = lw.options(op, lw.tfl.StridedSliceOptions)
    masks = (o.BeginMask(), o.EndMask(), o.ShrinkAxisMask(), o.EllipsisMask(), o.NewAxisMask()) if o else (0,) * 5
    if masks[3] or masks[4]:
        raise UnsupportedOpError(f"{where}: ellipsis and new-axis masks are not supported")
    if not (len(begin) == len(end) == len(strides) <= x.ndim) or np.any(strides == 0):
        raise ModelError(f"{where}: begin {begin.tolist()}, end {end.tolist()}, strides {strides.tolist()} do not "
                         f"fit an input of {x.ndim} dimensions")
    index = []
    for d in range(len(begin)):
        if masks[2] >> d & 1:
            index.append(int(begin[d]))
        else:
            index.append(slice(None if masks[0] >> d & 1 else int(begin[d]),
                               None if masks[1] >> d & 1 else int(end[d]), int(strides[d])))
    lw.fold(where, op, np.asarray(x[tuple(index)]))


@lowering("PACK")
def fold_pack(lw, op, name: str, where: str) -> None:
    o = lw.options(op, lw.tfl.PackOptions)
    parts = [lw.int_value(where, i, f"value {k}") for k, i in enumerate(op_inputs(op))]
    if len({p.shape for p in parts}) != 1:
        raise ModelError(f"{where}: values of different shapes {[list(p.shape) for p in parts]}")
    axis = o.Axis() if o is not None else 0
    if not -parts[0].ndim - 1 <= axis <= parts[0].ndim:
        raise ModelError(f"{where}: axis {axis} out of range")
    lw.fold(where, op, np.stack(parts, axis=axis))
