"""MaxPool, AveragePool (+ the Trunc that Brevitas exports after it) and GlobalAveragePool.

Max pooling is exact on codes. Average pooling sums codes over the window (padding
counts as real 0, i.e. ``count_include_pad``) and divides by the window size inside
the following Trunc or Quant: exactly (``div_round``) when the scales make the divisor
rational, through a Q31 multiplier otherwise.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Node, Tensor
from ..qonnx_lowering import IntValue, describe, lowering, onnx_attrs, resolves


def _window(lw, node, global_pool: bool = False):
    x = lw.int_input(node)
    ih, iw, _ = x.shape
    if global_pool:
        return x, [ih, iw], [1, 1], [0, 0, 0, 0]
    a = onnx_attrs(node)
    k = list(a["kernel_shape"])
    strides = list(a.get("strides", k))
    pads = list(a.get("pads", [0] * 2 * len(k)))
    if a.get("ceil_mode", 0):
        raise UnsupportedOpError(f"{describe(node)}: ceil_mode=1 is not supported")
    if any(d != 1 for d in a.get("dilations", [1] * len(k))):
        raise UnsupportedOpError(f"{describe(node)}: dilated pooling is not supported")
    if len(k) == 1:
        k, strides, pads = [1] + k, [1] + strides, [0, pads[0], 0, pads[1]]
    return x, k, strides, pads


def _out_shape(lw, node, x, k, strides, pads):
    oh = (x.shape[0] + pads[0] + pads[2] - k[0]) // strides[0] + 1
    ow = (x.shape[1] + pads[1] + pads[3] - k[1]) // strides[1] + 1
    return (oh, ow, x.shape[2])


@lowering("MaxPool")
def lower_maxpool(lw, node) -> None:
    x, k, strides, pads = _window(lw, node)
    shape = _out_shape(lw, node, x, k, strides, pads)
    out = Tensor(node.output[0], shape, x.dtype, x.bits, x.signed, list(x.scale), x.zero_point, x.qmin, x.qmax)
    lw.emit(node, "maxpool", [x.name], out, kernel=k, stride=strides, pad=pads)


@lowering("AveragePool", "GlobalAveragePool")
def lower_avgpool(lw, node) -> None:
    glob = node.op_type == "GlobalAveragePool"
    x, k, strides, pads = _window(lw, node, glob)
    if not glob and not onnx_attrs(node).get("count_include_pad", 0) and any(pads):
        raise UnsupportedOpError(f"{describe(node)}: padded average pooling without count_include_pad")
    shape = _out_shape(lw, node, x, k, strides, pads)
    # The sum is an int32 tensor with the input's scale; the division waits for the quantizer.
    s = Tensor(node.output[0] + "_sum", shape, "int32", 32, True, list(x.scale), 0, contract.INT32_MIN,
               contract.INT32_MAX)
    lw.add_tensor(s)
    lw.env[node.output[0]] = IntValue(s.name, ("average pool", dict(input=x.name, kernel=k, stride=strides,
                                                                  pad=pads, node=node.name)))


def _emit_avgpool(lw, node, v, out, divide: dict) -> None:
    p = v.pending[1]
    del lw.tensors[v.tensor]
    lw.add_tensor(out)
    lw.nodes.append(Node(p["node"], "avgpool", [p["input"]], [out.name],
                         dict(kernel=p["kernel"], stride=p["stride"], pad=p["pad"], **divide)))
    lw.env[node.output[0]] = IntValue(out.name)


@resolves("average pool")
def resolve_avgpool_quant(lw, node, v, out) -> None:
    """AveragePool -> Quant: q = round(sum * s_in / (K * s_out)) + zp."""
    p = v.pending[1]
    x = lw.tensors[p["input"]]
    window = p["kernel"][0] * p["kernel"][1]
    frac = contract.pool_divisor(x.scale[0], out.scale[0], window)
    if frac is not None:
        divide = dict(num=frac[0], den=frac[1], mode="ROUND", requant=None, zero_point=out.zero_point)
    else:
        rq = contract.make_requant(np.array([x.scale[0] / (window * out.scale[0])]), out.zero_point, out.qmin,
                                   out.qmax)
        divide = dict(num=1, den=1, mode="ROUND", requant=rq, zero_point=out.zero_point)
    divide.update(lo=out.qmin, hi=out.qmax)
    _emit_avgpool(lw, node, v, out, divide)


@lowering("Trunc")
def lower_trunc(lw, node) -> None:
    """Brevitas TruncAvgPool: round(sum) then divide by 2^(in_bits - out_bits), clamp, ROUND/FLOOR."""
    v = lw.value(node)
    if v.pending is None or v.pending[0] != "average pool":
        raise UnsupportedOpError(f"{describe(node)}: Trunc is supported only right after AveragePool")
    a = onnx_attrs(node)
    mode = a.get("rounding_mode", b"FLOOR")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    if mode not in ("ROUND", "FLOOR"):
        raise UnsupportedOpError(f"{describe(node)}: Trunc rounding_mode {mode}")
    scale = float(np.ravel(lw.const(node, 1, "the scale"))[0])
    zp = float(np.ravel(lw.const(node, 2, "the zero point"))[0])
    out_scale = float(np.ravel(lw.const(node, 4, "the output scale"))[0])
    out_bits = int(np.ravel(lw.const(node, 5, "the output bit width"))[0])
    p = v.pending[1]
    x = lw.tensors[p["input"]]
    window = p["kernel"][0] * p["kernel"][1]
    if zp != 0 or not np.isclose(scale * window, x.scale[0], rtol=1e-6):
        raise UnsupportedOpError(f"{describe(node)}: Trunc with zero point or a scale other than input scale / "
                                 "window is not supported")
    if not (np.isfinite(out_scale) and out_scale > 0 and np.isfinite(scale) and scale > 0):
        raise UnsupportedOpError(f"{describe(node)}: Trunc scales must be finite and positive "
                                 f"(scale {scale}, output scale {out_scale})")
    # qonnx trunc_v2 / Brevitas TruncIntQuant: y = round(x / scale) / 2^round(log2(out_scale / scale)),
    # clamped to the output range, then rounded. The power of two is below 1 when the output is
    # wider than the sum (a widening Trunc): then it multiplies the sum exactly.
    shift = int(np.round(np.log2(out_scale / scale)))
    signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
    qmin, qmax = contract.quant_range(out_bits, signed, narrow)
    dtype = contract.storage_dtype(out_bits, signed, describe(node))
    num, den = (1, 2 ** shift) if shift >= 0 else (2 ** -shift, 1)
    # the kernel computes sum * num and the divisor in int32
    largest_sum = window * max(abs(x.qmin - x.zero_point), abs(x.qmax - x.zero_point))
    if largest_sum * num > contract.INT32_MAX or den > contract.INT32_MAX:
        raise UnsupportedOpError(f"{describe(node)}: Trunc rescales the pooled sum by 2^{-shift}, which "
                                 "overflows int32")
    out = Tensor(node.output[0], lw.tensors[v.tensor].shape, dtype, out_bits, signed, [out_scale], 0, qmin, qmax)
    _emit_avgpool(lw, node, v, out, dict(num=num, den=den, mode=mode, requant=None, zero_point=0,
                                         lo=qmin, hi=qmax))

