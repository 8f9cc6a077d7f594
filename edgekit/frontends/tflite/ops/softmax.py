"""SOFTMAX -> IR ``softmax_tflite`` with the exp table TFLite computes (contract.softmax_exp_table)."""
from __future__ import annotations

import numpy as np

from ....errors import ContractError, UnsupportedOpError
from ....ir import contract
from ..operands import op_inputs
from ..registry import lowering


@lowering("SOFTMAX")
def lower_softmax(lw, op, name: str, where: str) -> None:
    x = lw.act(where, op_inputs(op)[0])
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.zero_point != -128 or np.float32(out.scale[0]) != np.float32(1 / 256):
        raise UnsupportedOpError(f"{where}: int8 softmax output must have scale 1/256 and zero point -128 "
                                 f"(TFLite's requirement), not {out.scale[0]:.6g} and {out.zero_point}")
    depth = x.shape[-1] if x.shape else 1
    if depth * (1 << 19) >= 2**31:
        raise ContractError(f"{where}: softmax over {depth} values overflows TFLite's Q12.19 sum")
    o = lw.options(op, lw.tfl.SoftmaxOptions)
    beta = o.Beta() if o is not None else 1.0
    try:
        table = contract.softmax_exp_table(beta, x.scale[0])
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    tname = lw.add_const(f"{name}_exp", table, "int32", 32, [2.0**-31])
    lw.emit(name, "softmax_tflite", [x.name, tname], out, oidx, beta=float(beta))
