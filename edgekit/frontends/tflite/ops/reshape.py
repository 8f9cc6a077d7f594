"""RESHAPE and SQUEEZE -> IR ``reshape``."""
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
    if (out.scale, out.zero_point) != (x.scale, x.zero_point):
        raise UnsupportedOpError(f"{where}: reshape that changes the quantization is not supported")
    lw.emit(name, "reshape", [x.name], out, oidx)
