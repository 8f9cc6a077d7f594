"""FULLY_CONNECTED -> IR ``dense``."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ....ir import contract
from ..operands import conv_requant, op_inputs, read_bias, read_weights
from ..params import INT8_MAX, INT8_MIN
from ..registry import lowering


@lowering("FULLY_CONNECTED")
def lower_fully_connected(lw, op, name: str, where: str) -> None:
    o = lw.options(op, lw.tfl.FullyConnectedOptions)
    if o is not None and o.WeightsFormat() != 0:
        raise UnsupportedOpError(f"{where}: shuffled weights format is not supported")
    ins = op_inputs(op)
    x = lw.act(where, ins[0])
    w, w_scale = read_weights(lw, where, ins[1], lw.t[ins[1]].shape[0], 0)
    if w.ndim != 2:
        raise UnsupportedOpError(f"{where}: weights of shape {list(w.shape)}")
    n_out, n_in = w.shape
    if x.size != n_in:
        raise UnsupportedOpError(f"{where}: input of {x.size} values per sample for {n_in} input features "
                                 "(fully connected over several rows is not supported)")
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.size != n_out:
        raise ModelError(f"{where}: output shape {list(out.shape)} for {n_out} outputs")
    bias = read_bias(lw, where, ins, n_out)
    codes = w.astype(np.int64)
    folded = bias - x.zero_point * codes.sum(axis=1)  # the kernel multiplies raw codes
    contract.check_accumulator(where, contract.accumulator_bound(codes, folded, x.qmin, x.qmax))
    contract.check_accumulator(where, contract.accumulator_bound(codes, bias, x.qmin - x.zero_point,
                                                                 x.qmax - x.zero_point))
    lo, hi = lw.activation(where, o, out) if o is not None else (INT8_MIN, INT8_MAX)
    # TFLite Micro's CalculateOpDataFullyConnected: per channel or per tensor, the ratio is
    # double(in) * double(w) / double(out) (not the float32 product of older TFLite versions)
    rq = conv_requant(lw, where, x, w_scale, out, lo, hi, n_out)
    wname = lw.add_const(f"{name}_weight", w, "int8", 8, w_scale)
    bname = lw.add_const(f"{name}_bias", folded, "int32", 32, np.float64(x.scale[0]) * np.resize(w_scale, n_out))
    lw.emit(name, "dense", [x.name, wname, bname], out, oidx, requant=rq)
