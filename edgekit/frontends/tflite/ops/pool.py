"""AVERAGE_POOL_2D and MAX_POOL_2D -> IR ``avgpool`` / ``maxpool``."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ....ir.graph import Tensor
from ..operands import op_inputs
from ..params import INT8_MAX, INT8_MIN, same_or_valid
from ..registry import lowering


def _pool_window(lw, op, where: str, x: Tensor):
    o = lw.options(op, lw.tfl.Pool2DOptions, where)
    if len(x.shape) != 3:
        raise UnsupportedOpError(f"{where}: input of shape {list(x.shape)}; expected N x H x W x C")
    ih, iw, c = x.shape
    kh, kw, sh, sw = o.FilterHeight(), o.FilterWidth(), o.StrideH(), o.StrideW()
    pad = lw.pad_names.get(o.Padding(), "?")
    oh, pad_t, pad_b = same_or_valid(pad, ih, kh, sh, 1, where)
    ow, pad_l, pad_r = same_or_valid(pad, iw, kw, sw, 1, where)
    return o, [kh, kw], [sh, sw], [pad_t, pad_l, pad_b, pad_r], (oh, ow, c)


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D")
def lower_pool(lw, op, name: str, where: str) -> None:
    x = lw.act(where, op_inputs(op)[0])
    o, k, stride, pad, shape = _pool_window(lw, op, where, x)
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.shape != shape:
        raise ModelError(f"{where}: output shape {list(out.shape)} disagrees with the computed {list(shape)}")
    if abs(np.float32(x.scale[0]) - np.float32(out.scale[0])) > 1e-6 or x.zero_point != out.zero_point:
        raise UnsupportedOpError(f"{where}: input and output quantization differ (TFLite requires them equal)")
    lo, hi = lw.activation(where, o, out)
    if lw.op_name(op) == "MAX_POOL_2D":
        clamp = {} if (lo, hi) == (INT8_MIN, INT8_MAX) else {"lo": lo, "hi": hi}
        lw.emit(name, "maxpool", [x.name], out, oidx, kernel=k, stride=stride, pad=pad, **clamp)
        return
    # TFLite: the codes themselves summed over the taps inside the input, divided by their
    # count, rounded half away from zero, clamped to the activation range.
    lw.emit(name, "avgpool", [x.name], out, oidx, kernel=k, stride=stride, pad=pad, num=1, den=k[0] * k[1],
            mode="AWAY", requant=None, zero_point=0, lo=lo, hi=hi, raw_sum=True, count_include_pad=False)
