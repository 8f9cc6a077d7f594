"""RESHAPE, SQUEEZE and EXPAND_DIMS -> IR ``reshape``."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ..operands import op_inputs
from ..registry import lowering


@lowering("RESHAPE", "SQUEEZE")
def lower_reshape(lw, op, name: str, where: str) -> None:
    x = lw.act(where, op_inputs(op)[0])
    oidx = int(op.OutputsAsNumpy()[0])
    y = lw.t[oidx]
    if not y.shape or y.shape[0] != 1:
        raise UnsupportedOpError(f"{where}: output shape {list(y.shape)}; edgekit expects batch 1")
    out = lw.out_tensor(where, oidx)
    if out.size != x.size:
        raise ModelError(f"{where}: reshape of {x.size} values into {list(y.shape)}")
    ins = op_inputs(op)
    if len(ins) > 1 and ins[1] >= 0:  # the new shape, a constant or import-time shape arithmetic
        want = lw.int_value(where, ins[1], "new shape").ravel()
        known = int(np.prod([d for d in want if d != -1]))
        ok = (len(want) == len(y.shape) and (want == -1).sum() <= 1 and known > 0 and
              all(d in (-1, e) for d, e in zip(want.tolist(), y.shape)))
        if not ok:
            raise ModelError(f"{where}: new shape {want.tolist()} does not match the output tensor's shape "
                             f"{list(y.shape)}")
    emit_reshape(lw, name, where, x, out, oidx)


def emit_reshape(lw, name: str, where: str, x, out, oidx: int) -> None:
    if (out.scale, out.zero_point) != (x.scale, x.zero_point):
        raise UnsupportedOpError(f"{where}: reshape that changes the quantization is not supported")
    lw.emit(name, "reshape", [x.name], out, oidx)


# The TFLite converter writes Keras' Conv1D and 1D pooling as EXPAND_DIMS -> 2D op -> SQUEEZE.
@lowering("EXPAND_DIMS")
def lower_expand_dims(lw, op, name: str, where: str) -> None:
    ins = op_inputs(op)
    if len(ins) != 2:
        raise ModelError(f"{where}: {len(ins)} inputs (expected input and axis)")
    x = lw.act(where, ins[0])
    oidx = int(op.OutputsAsNumpy()[0])
    x_shape, y_shape = tuple(lw.t[ins[0]].shape), tuple(lw.t[oidx].shape)
    axis = lw.int_value(where, ins[1], "axis").ravel()
    if axis.size != 1 or not -len(x_shape) - 1 <= int(axis[0]) <= len(x_shape):
        raise ModelError(f"{where}: axis {axis.tolist()} for an input of {len(x_shape)} dimensions")
    want = np.expand_dims(np.empty(x_shape, np.int8), int(axis[0])).shape
    if want != y_shape:
        raise ModelError(f"{where}: inserting axis {int(axis[0])} into {list(x_shape)} gives {list(want)}, not the "
                         f"output tensor's shape {list(y_shape)}")
    if not y_shape or y_shape[0] != 1:
        raise UnsupportedOpError(f"{where}: output shape {list(y_shape)}; edgekit expects batch 1")
    emit_reshape(lw, name, where, x, lw.out_tensor(where, oidx), oidx)
