"""Conv (1D and 2D; stride, padding, dilation; group 1 or depthwise) -> IR ``conv2d``.

1D convolutions become 2D ones over a (1, L, C) map. Weights are stored OHWI for
regular and HWC (one filter per output channel) for depthwise convolutions, the layouts
the channels-last kernels walk contiguously.
"""
from __future__ import annotations

import numpy as np

from ...errors import ContractError, ModelError, UnsupportedOpError
from ...ir import contract
from ...ir.graph import Tensor
from ..qonnx import QuantConst, _attrs, _bias_codes, describe, lowering


@lowering("Conv")
def lower_conv(lw, node) -> None:
    a = _attrs(node)
    x = lw.int_input(node, 0)
    w = lw.env.get(node.input[1])
    if not isinstance(w, QuantConst):
        raise ModelError(f"{describe(node)}: the weights are not quantized; use a Brevitas QuantConv with a "
                         "weight quantizer")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOpError(f"{describe(node)}: auto_pad is not supported; export explicit pads")
    if np.any(w.zero_point != 0):
        raise UnsupportedOpError(f"{describe(node)}: asymmetric weights (zero point != 0) are not supported")
    if w.bits > 8:
        raise ContractError(f"{describe(node)}: {w.bits}-bit weights; edgekit holds weights in at most 8 bits")
    codes = w.codes
    one_d = codes.ndim == 3
    if one_d:  # [O, I, K] -> [O, I, 1, K]
        codes = codes[:, :, None, :]
    if codes.ndim != 4:
        raise UnsupportedOpError(f"{describe(node)}: {codes.ndim - 2}D convolution is not supported")
    kernel = list(a.get("kernel_shape", codes.shape[2:]))
    strides = list(a.get("strides", [1] * len(kernel)))
    dil = list(a.get("dilations", [1] * len(kernel)))
    pads = list(a.get("pads", [0] * 2 * len(kernel)))
    if one_d:
        kernel, strides, dil = [1] + kernel, [1] + strides, [1] + dil
        pads = [0, pads[0], 0, pads[1]]
    pad_t, pad_l, pad_b, pad_r = pads
    group = int(a.get("group", 1))
    ih, iw, ic = x.shape
    oc = codes.shape[0]
    if min(kernel) < 1:
        raise UnsupportedOpError(f"{describe(node)}: kernel {kernel}")
    depthwise = group != 1
    if depthwise and (group != ic or oc % ic != 0 or codes.shape[1] != 1):
        raise UnsupportedOpError(f"{describe(node)}: grouped convolution with group={group} over {ic} channels "
                                 "is not supported; only group=1 or depthwise (group = input channels)")
    if len(x.scale) != 1:
        raise UnsupportedOpError(f"{describe(node)}: input with per-channel scale")

    w_scale = np.ravel(w.scale).astype(np.float64)
    acc_scale = np.float64(x.scale[0]) * (w_scale if w_scale.size > 1 else np.full(oc, w_scale[0]))
    bias = np.zeros(oc, np.int64)
    if len(node.input) > 2 and node.input[2]:
        bias = _bias_codes(lw, node, node.input[2], acc_scale)

    if depthwise:  # [O, 1, KH, KW] -> [KH, KW, O]
        wts = np.transpose(codes[:, 0], (1, 2, 0))
    else:  # [O, I, KH, KW] -> [O, KH, KW, I]
        wts = np.transpose(codes, (0, 2, 3, 1))
    # The kernel computes bias + sum (x - zp) * w over the taps inside the input, so
    # the bound uses the range of x - zp.
    bound = contract.accumulator_bound(codes.reshape(oc, -1), bias, x.qmin - x.zero_point, x.qmax - x.zero_point)
    contract.check_accumulator(describe(node), bound)
    if int(bound.max()) >= contract.FLOAT32_EXACT_INT:
        lw.qonnx_float_exact = False

    kh, kw = kernel
    oh = (ih + pad_t + pad_b - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (iw + pad_l + pad_r - dil[1] * (kw - 1) - 1) // strides[1] + 1
    if (oh, ow) != lw.shape(node.output[0])[:2]:
        raise ModelError(f"{describe(node)}: output size {(oh, ow)} disagrees with the graph's "
                         f"{lw.shape(node.output[0])[:2]}")
    wname = lw.add_const(f"{node.name}_weight", wts, "int8", w.bits, w.signed, w_scale)
    bname = lw.add_const(f"{node.name}_bias", bias, "int32", 32, True, acc_scale)
    out = Tensor(node.output[0], (oh, ow, oc), "int32", 32, True, [float(s) for s in acc_scale], 0,
                 contract.INT32_MIN, contract.INT32_MAX)
    lw.emit(node, "conv2d", [x.name, wname, bname], out, requant=None, kernel=[kh, kw], stride=strides,
            dilation=dil, pad=[pad_t, pad_l, pad_b, pad_r], depthwise=depthwise, depth_multiplier=oc // ic
            if depthwise else 1)
