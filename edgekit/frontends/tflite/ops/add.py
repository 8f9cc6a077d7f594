"""ADD -> IR ``add`` (CalculateOpDataAdd)."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ....ir import contract
from ..operands import op_inputs
from ..registry import lowering


@lowering("ADD")
def lower_add(lw, op, name: str, where: str) -> None:
    ins = op_inputs(op)
    if len(ins) != 2:
        raise UnsupportedOpError(f"{where}: {len(ins)} inputs")
    a, b = lw.act(where, ins[0]), lw.act(where, ins[1])
    if a.shape != b.shape:
        raise UnsupportedOpError(f"{where}: broadcasting add {list(a.shape)} + {list(b.shape)} is not supported")
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.shape != a.shape:
        raise ModelError(f"{where}: output shape {list(out.shape)} for inputs {list(a.shape)}")
    lo, hi = lw.activation(where, lw.options(op, lw.tfl.AddOptions), out)
    # CalculateOpDataAdd (int8): inputs shifted left by 20 bits, rescaled to twice the larger scale
    sa, sb, so = (np.float32(t.scale[0]) for t in (a, b, out))
    twice_max = 2 * np.float64(max(sa, sb))
    r_a, r_b = np.float64(sa) / twice_max, np.float64(sb) / twice_max
    r_out = twice_max / ((1 << 20) * np.float64(so))
    if not 0 < r_out < 1:
        raise UnsupportedOpError(f"{where}: output scale {float(so):.6g} is too small for TFLite's int8 add")
    rq_in = [contract.tflite_requant(np.array([r]), 0, contract.INT32_MIN, contract.INT32_MAX, left_shift=20)
             for r in (r_a, r_b)]
    rq = contract.tflite_requant(np.array([r_out]), out.zero_point, lo, hi)
    lw.emit(name, "add", [a.name, b.name], out, oidx, requant=rq, in_requant=rq_in)
