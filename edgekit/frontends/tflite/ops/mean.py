"""MEAN over spatial axes -> a depthwise IR ``conv2d`` with weights 1 (QuantizedMeanOrSum)."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ....ir import contract
from ....ir.graph import Node, Tensor
from ..operands import op_inputs
from ..params import INT8_MAX, INT8_MIN
from ..registry import lowering


@lowering("MEAN")
def lower_mean(lw, op, name: str, where: str) -> None:
    """MEAN over the spatial axes (Keras' GlobalAveragePooling) as TFLite Micro computes it
    (reference_ops::QuantizedMeanOrSum): ``sum - zp_in * n``, then MultiplyByQuantizedMultiplier
    with ``M' = (M << k) / n`` and the shift lowered by ``k = min(floor(log2 n), 32, 31 + shift)``,
    where (M, shift) = QuantizeMultiplier(s_in / s_out); + zp_out, clamp. That is a depthwise
    convolution over the reduced window with weights 1 and bias 0 (x - zp per tap) and a
    double-rounding Requant (M', S + k): the IR, simulator and kernels need nothing new."""
    ins = op_inputs(op)
    x = lw.act(where, ins[0])
    nd = len(lw.t[ins[0]].shape)
    axes = sorted({int(a) % nd for a in np.atleast_1d(lw.int_value(where, ins[1], "axis")).ravel()}) if nd else []
    if nd not in (3, 4) or not axes or 0 in axes or nd - 1 in axes:
        raise UnsupportedOpError(f"{where}: mean over axes {axes} of a {nd}-D tensor; edgekit imports the mean "
                                 "over spatial axes (global average pooling) of N x H x W x C or N x L x C tensors")
    o = lw.options(op, lw.tfl.ReducerOptions)
    keep = bool(o.KeepDims()) if o is not None else False
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    src = x
    if nd == 3:  # N x L x C: a 1 x L x C map
        src = Tensor(f"{x.name}_map", (1,) + tuple(x.shape), x.dtype, x.bits, x.signed, x.scale, x.zero_point,
                     x.qmin, x.qmax)
        lw.tensors[src.name] = src
        lw.nodes.append(Node(f"{name}_in", "reshape", [x.name], [src.name], {}))
        axes = [a + 1 for a in axes]
    h, w, c = src.shape
    kh, kw = (h if 1 in axes else 1), (w if 2 in axes else 1)
    n = kh * kw
    ratio = np.float64(np.float32(x.scale[0])) / np.float64(np.float32(out.scale[0]))
    try:
        m, s = contract.quantize_multiplier_tflite(float(ratio))
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    k = min(n.bit_length() - 1, 32, 31 + (31 - s))
    if k < 0:
        raise UnsupportedOpError(f"{where}: scale ratio {ratio:.3g} is too small for TFLite's mean")
    rq = contract.Requant(((m << k) // n,), (s + k,), out.zero_point, INT8_MIN, INT8_MAX, False, "double", 0)
    shape = (h // kh, w // kw, c)
    y = out if tuple(out.shape) == shape else Tensor(f"{out.name}_map", shape, out.dtype, out.bits, out.signed,
                                                      out.scale, out.zero_point, out.qmin, out.qmax)
    if y.size != out.size:
        raise ModelError(f"{where}: output shape {list(lw.t[oidx].shape)} for a mean over axes {axes} "
                         f"(keep_dims {keep}) of {list(lw.t[ins[0]].shape)}")
    wname = lw.add_const(f"{name}_ones", np.ones((kh, kw, c), np.int64), "int8", 8, [1.0])
    bname = lw.add_const(f"{name}_zero", np.zeros(c, np.int64), "int32", 32, [float(x.scale[0])])
    attrs = dict(requant=rq, kernel=[kh, kw], stride=[1, 1], dilation=[1, 1], pad=[0, 0, 0, 0], depthwise=True,
                 depth_multiplier=1)
    if y is out:
        lw.emit(name, "conv2d", [src.name, wname, bname], out, oidx, **attrs)
    else:
        lw.tensors[y.name] = y
        lw.nodes.append(Node(name, "conv2d", [src.name, wname, bname], [y.name], attrs))
        lw.emit(f"{name}_out", "reshape", [y.name], out, oidx)
