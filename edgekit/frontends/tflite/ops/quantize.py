"""QUANTIZE int8 -> int8 -> IR ``requantize``."""
from __future__ import annotations

import numpy as np

from ....errors import UnsupportedOpError
from ....ir import contract
from ..operands import op_inputs
from ..params import INT8_MAX, INT8_MIN
from ..registry import lowering


@lowering("QUANTIZE")
def lower_quantize(lw, op, name: str, where: str) -> None:
    """int8 -> int8 requantization (TFLite Micro's Requantize): double(s_in) / double(s_out)."""
    i = op_inputs(op)[0]
    if lw.t[i].type != "INT8":
        raise UnsupportedOpError(f"{where}: quantizing a {lw.t[i].type} tensor; edgekit imports full-integer "
                                 "models (int8 input and output: inference_input_type=tf.int8)")
    x = lw.act(where, i)
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    ratio = np.float64(np.float32(x.scale[0])) / np.float64(np.float32(out.scale[0]))
    try:
        rq = contract.tflite_requant(np.array([ratio]), out.zero_point, INT8_MIN, INT8_MAX)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    lw.emit(name, "requantize", [x.name], out, oidx, requant=rq)
