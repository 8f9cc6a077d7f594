"""CONV_2D and DEPTHWISE_CONV_2D -> IR ``conv2d`` (PopulateConvolutionQuantizationParams)."""
from __future__ import annotations

import numpy as np

from ....errors import ModelError, UnsupportedOpError
from ....ir import contract
from ..operands import conv_requant, op_inputs, read_bias, read_weights
from ..params import same_or_valid
from ..registry import lowering


@lowering("CONV_2D", "DEPTHWISE_CONV_2D")
def lower_conv(lw, op, name: str, where: str) -> None:
    tfl = lw.tfl
    depthwise = lw.op_name(op) == "DEPTHWISE_CONV_2D"
    o = lw.options(op, tfl.DepthwiseConv2DOptions if depthwise else tfl.Conv2DOptions, where)
    ins = op_inputs(op)
    x = lw.act(where, ins[0])
    if len(x.shape) != 3:
        raise UnsupportedOpError(f"{where}: input of shape {list(x.shape)}; expected N x H x W x C")
    ih, iw, ic = x.shape
    oidx = int(op.OutputsAsNumpy()[0])
    if depthwise:
        w, w_scale = read_weights(lw, where, ins[1], lw.t[ins[1]].shape[-1], 3)
        if w.ndim != 4 or w.shape[0] != 1:
            raise UnsupportedOpError(f"{where}: depthwise weights of shape {list(w.shape)}")
        _, kh, kw, oc = w.shape
        mult = o.DepthMultiplier() if o is not None else 1
        if oc != ic * mult:
            raise UnsupportedOpError(f"{where}: {oc} output channels from {ic} input channels with depth "
                                     f"multiplier {mult}")
        wts = w[0]  # [KH, KW, OC]
        rows = wts.reshape(-1, oc).T  # [OC, KH*KW]
    else:
        w, w_scale = read_weights(lw, where, ins[1], lw.t[ins[1]].shape[0], 0)
        if w.ndim != 4:
            raise UnsupportedOpError(f"{where}: weights of shape {list(w.shape)}")
        oc, kh, kw, wic = w.shape
        if wic != ic:
            raise UnsupportedOpError(f"{where}: grouped convolution ({ic} input channels, filters of depth {wic}) "
                                     "is not supported")
        wts = w  # [O, KH, KW, I]: the IR layout
        rows = wts.reshape(oc, -1)
        mult = 1
    pad = lw.pad_names.get(o.Padding(), "?")
    sh, sw = o.StrideH(), o.StrideW()
    dh, dw = o.DilationHFactor() or 1, o.DilationWFactor() or 1
    oh, pad_t, pad_b = same_or_valid(pad, ih, kh, sh, dh, where)
    ow, pad_l, pad_r = same_or_valid(pad, iw, kw, sw, dw, where)
    out = lw.out_tensor(where, oidx)
    if out.shape != (oh, ow, oc):
        raise ModelError(f"{where}: output shape {list(out.shape)} disagrees with the computed {[oh, ow, oc]}")
    bias = read_bias(lw, where, ins, oc)
    # the kernel computes bias + sum (x - zp) * w: the bound uses the range of x - zp
    contract.check_accumulator(where, contract.accumulator_bound(rows, bias, x.qmin - x.zero_point,
                                                                 x.qmax - x.zero_point))
    lo, hi = lw.activation(where, o, out)
    rq = conv_requant(lw, where, x, w_scale, out, lo, hi, oc)
    wname = lw.add_const(f"{name}_weight", wts, "int8", 8, w_scale)
    bname = lw.add_const(f"{name}_bias", bias, "int32", 32, np.float64(x.scale[0]) * np.resize(w_scale, oc))
    lw.emit(name, "conv2d", [x.name, wname, bname], out, oidx, requant=rq, kernel=[kh, kw], stride=[sh, sw],
            dilation=[dh, dw], pad=[pad_t, pad_l, pad_b, pad_r], depthwise=depthwise, depth_multiplier=mult)
