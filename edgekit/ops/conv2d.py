"""2D convolution over channels-last maps (1D convolutions use H = 1), regular or depthwise.

``acc = bias + sum over taps inside the input of (x - zp) * w``: taps in the padding
contribute nothing, exactly as padding with real zeros does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import Requant
from ..ir.operators import HlsLayer, Op, register
from ._direct_conv import float32_conv
from ._gemm import (FLOAT32_EXACT_BELOW, FLOAT64_EXACT_BELOW, GemmWeights, GemmPlan, add_requantized,
                    exact_matmul, float_requant, gemm_weights, plan_gemm, requantized)
from ._windows import padded, windows


# In-place depthwise convolutions keep this many bytes of original input rows on the stack.
INPLACE_RING_LIMIT = 2048


@dataclass
class Conv2dAttrs:
    kernel: list[int]  # [kh, kw]
    stride: list[int]  # [sh, sw]
    dilation: list[int]  # [dh, dw]
    pad: list[int]  # [top, left, bottom, right]
    depthwise: bool  # one filter per output channel over input channel (oc // depth_multiplier)
    depth_multiplier: int
    requant: Requant | None = None  # the accumulator onto the output grid (None: int32 out)
    # a fused residual add (ir/passes.py): {"in_requant": [Requant, Requant], "requant": Requant | None}
    residual: dict | None = None


def _hls_conv(n_in_taps, positions):
    """hls4ml conv layer -> (fan_in, n_out, positions) from its attributes."""
    def geometry(layer) -> tuple[int, int, int]:
        return n_in_taps(layer), int(layer.get_attr("n_filt")), positions(layer)
    return geometry


def _width(layer) -> int:
    return int(layer.get_attr("out_width"))


def _area(layer) -> int:
    return int(layer.get_attr("out_width")) * int(layer.get_attr("out_height"))


_CONV1D = _hls_conv(lambda lay: int(lay.get_attr("n_chan")) * int(lay.get_attr("filt_width")), _width)
_CONV2D = _hls_conv(lambda lay: int(lay.get_attr("n_chan")) * int(lay.get_attr("filt_width"))
                    * int(lay.get_attr("filt_height")), _area)


def conv_geometry(node, graph) -> dict:
    """Shapes, kernel, stride, dilation and top/left padding of a conv2d node (channels last);
    shared by the reference kernel's context and the optimized kernels' selection."""
    x = graph.tensors[node.inputs[0]]
    y = graph.tensors[node.outputs[0]]
    a = Conv2dAttrs(**node.attrs)
    return {"ih": x.shape[0], "iw": x.shape[1], "ic": x.shape[2], "oh": y.shape[0], "ow": y.shape[1],
            "oc": y.shape[2], "kh": a.kernel[0], "kw": a.kernel[1], "sh": a.stride[0],
            "sw": a.stride[1], "dh": a.dilation[0], "dw": a.dilation[1], "pad_t": a.pad[0],
            "pad_l": a.pad[1]}


def depthwise_inplace_rows(node, graph) -> int:
    """Rows of original input an in-place depthwise conv must keep (0: not possible).

    Output row oy overwrites input row oy. It reads input rows oy - pad_t .. oy - pad_t + kh - 1:
    those above oy are untouched; row oy and the pad_t rows before it are already (being)
    overwritten, so the kernel copies each input row into a ring of pad_t + 1 rows just
    before overwriting it. Needs stride 1, no dilation, one output per input channel,
    an output the size of the input, and equal element widths.
    """
    a = Conv2dAttrs(**node.attrs)
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    if not a.depthwise or a.depth_multiplier != 1 or a.stride != [1, 1] or a.dilation != [1, 1]:
        return 0
    if x.shape != y.shape or x.itemsize != y.itemsize or a.residual:
        return 0
    rows = a.pad[0] + 1
    return rows if rows * x.shape[1] * x.shape[2] * x.itemsize <= INPLACE_RING_LIMIT else 0


def pointwise_inplace(node, graph) -> bool:
    """A 1x1 convolution may overwrite its input pixel by pixel: output pixel p depends only
    on input pixel p, so the kernel computes the pixel into a stack buffer and then stores it
    over input pixel p - which must not reach into pixel p + 1 (out pixel bytes <= in pixel bytes)."""
    a = Conv2dAttrs(**node.attrs)
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    return (not a.depthwise and a.kernel == [1, 1] and a.stride == [1, 1]
            and a.pad == [0, 0, 0, 0] and x.shape[:2] == y.shape[:2]
            and y.shape[2] * y.itemsize <= x.shape[2] * x.itemsize
            and not a.residual and y.shape[2] * y.itemsize <= INPLACE_RING_LIMIT)


def conv_weights(w, b, x_range) -> GemmWeights:
    """A regular convolution's weights (oc, kh, kw, ic) as [kh*kw*ic, oc] for the im2col GEMM,
    and as PyTorch's (oc, ic, kh, kw) float32 where the plan allows float32 sums."""
    prepared = gemm_weights(w.reshape(w.shape[0], -1), b, *x_range)
    plan = prepared.plan
    if plan.float_sums and plan.dtype is np.float32:
        torch_weights = np.ascontiguousarray(w.transpose(0, 3, 1, 2), np.float32)
        return GemmWeights(plan, prepared.w_t, torch_weights)
    return prepared


def depthwise_weights(w, b, x_range, mult: int) -> GemmWeights:
    """A depthwise convolution's weights (kh, kw, ic * mult): ``w_t`` as (kh, kw, ic, mult) for the
    batched product, in float32, float64 or int64 as the bound allows (a sum float32 holds only
    in pieces has no batched form here: float64 holds it whole); PyTorch's (oc, 1, kh, kw)."""
    kh, kw, oc = w.shape
    bound = plan_gemm(w.reshape(kh * kw, oc).T, b, *x_range).bound
    dtype = np.float32 if bound < FLOAT32_EXACT_BELOW else np.float64 if bound < FLOAT64_EXACT_BELOW else np.int64
    torch_weights = np.ascontiguousarray(w.transpose(2, 0, 1)[:, None], np.float32) if dtype is np.float32 else None
    return GemmWeights(GemmPlan(dtype, ((0, kh * kw),), bound), w.astype(dtype).reshape(kh, kw, oc // mult, mult),
                       torch_weights)


def conv_accumulators(x, w, b, zp, x_range, a: Conv2dAttrs, out_hw, prepared: GemmWeights | None = None) -> np.ndarray:
    """b + sum over taps of (x - zp) * w, (N, oh, ow, oc). Exact integers, in float32 when the
    plan's bound allows (see _gemm.requantized): PyTorch's direct convolution (``_direct_conv``),
    else one GEMM of the im2col patches [N*oh*ow, kh*kw*ic] with the weights (oc, kh, kw, ic) as
    [kh*kw*ic, oc] (in float32 pieces, float64 or int64 as the plan says)."""
    oc, k = w.shape[0], w[0].size
    prepared = prepared or conv_weights(w, b, x_range)
    plan = prepared.plan
    if prepared.torch_weights is not None:
        acc = float32_conv(x, zp, prepared.torch_weights, b, a.pad, a.stride, a.dilation, 1, out_hw)
        if acc is not None:
            return acc
    view = windows(padded(x, a.pad, zp, plan.dtype), a.kernel, a.stride, a.dilation, out_hw)
    patches = view.reshape(-1, k)  # the one copy: im2col (the simulator bounds the batch it is given)
    acc = exact_matmul(patches, prepared.w_t, plan)
    acc += b.astype(acc.dtype)
    return acc.reshape(x.shape[0], *out_hw, oc)


def depthwise_accumulators(x, w, b, zp, x_range, a: Conv2dAttrs, out_hw,
                           prepared: GemmWeights | None = None) -> np.ndarray:
    """Depthwise: output channel o = c * mult + m sums b[o] + (x[..., c] - zp) * w[ky, kx, o] over
    the taps; weights are (kh, kw, ic * mult). PyTorch's grouped convolution where float32 is
    exact, else one batched product (einsum) over the strided windows."""
    oc = w.shape[-1]
    prepared = prepared or depthwise_weights(w, b, x_range, a.depth_multiplier)
    if prepared.torch_weights is not None:
        acc = float32_conv(x, zp, prepared.torch_weights, b, a.pad, a.stride, a.dilation, x.shape[-1], out_hw)
        if acc is not None:
            return acc
    dtype = prepared.plan.dtype
    view = windows(padded(x, a.pad, zp, dtype), a.kernel, a.stride, a.dilation, out_hw)
    acc = np.einsum("nyxijc,ijcm->nyxcm", view, prepared.w_t)
    acc = acc.reshape(acc.shape[:3] + (oc,))
    acc += b.astype(dtype)
    return acc


@register
class Conv2d(Op):
    name = "conv2d"
    attributes = Conv2dAttrs
    template = "conv2d.c.j2"
    accumulates = True
    packs_weights = True
    float32_inputs = True
    hls_layers = (
        HlsLayer("Conv1D", "compute", _CONV1D), HlsLayer("PointwiseConv1D", "compute", _CONV1D),
        HlsLayer("Conv2D", "compute", _CONV2D), HlsLayer("PointwiseConv2D", "compute", _CONV2D),
        HlsLayer("DepthwiseConv1D", "compute", _hls_conv(lambda lay: int(lay.get_attr("filt_width")), _width)),
        HlsLayer("DepthwiseConv2D", "compute", _hls_conv(
            lambda lay: int(lay.get_attr("filt_width")) * int(lay.get_attr("filt_height")), _area)),
        # hls4ml pads in a layer of its own; zeros are on every grid
        HlsLayer("ZeroPadding1D", "pass-through"), HlsLayer("ZeroPadding2D", "pass-through"),
    )

    def prepare_node(self, node, graph) -> GemmWeights:
        a = self.attrs(node)
        xt = graph.tensors[node.inputs[0]]
        w, b = graph.constants[node.inputs[1]], graph.constants[node.inputs[2]]
        x_range = (xt.qmin - xt.zero_point, xt.qmax - xt.zero_point)
        return depthwise_weights(w, b, x_range, a.depth_multiplier) if a.depthwise else conv_weights(w, b, x_range)

    def simulate(self, node, inputs, graph, prepared: GemmWeights | None = None):
        x, w, b = inputs[:3]
        a = self.attrs(node)
        xt = graph.tensors[node.inputs[0]]
        zp = xt.zero_point
        out_hw = tuple(graph.tensors[node.outputs[0]].shape[:2])
        accumulators = depthwise_accumulators if a.depthwise else conv_accumulators
        rq = a.requant
        acc = accumulators(x, w, b, zp, (xt.qmin - zp, xt.qmax - zp), a, out_hw, prepared)
        if not a.residual:
            return [requantized(acc, None, rq, keep_float=True)]
        # fused residual add (ir/passes.py): same arithmetic as ops/add.py
        res = a.residual
        rt = graph.tensors[node.inputs[3]]
        if acc.dtype != np.int64 and rq.pure_shift:
            y = float_requant(acc, rq)  # exact (see requantized), and stays float for the add
        else:
            y = requantized(acc, None, rq)
        y = add_requantized(y, rq.zero_point, (rq.lo, rq.hi), inputs[3], rt.zero_point, (rt.qmin, rt.qmax),
                            *res["in_requant"], res["requant"], a_owned=True, keep_float=True)
        return [y]

    def prepare_simulation(self):
        import torch  # noqa: F401  (float32_conv's library, with its OpenMP pool)

    def inplace_inputs(self, node, graph):
        # The residual is read at output element i just before that element is written.
        if self.attrs(node).residual:
            return [node.inputs[3]]
        return [node.inputs[0]] if depthwise_inplace_rows(node, graph) or pointwise_inplace(node, graph) else []

    def c_context(self, node, graph):
        x = graph.tensors[node.inputs[0]]
        a = self.attrs(node)
        return {**conv_geometry(node, graph), "depthwise": a.depthwise, "mult": a.depth_multiplier,
                "zp": x.zero_point, "requant": a.requant, "residual": a.residual,
                "ring_rows": depthwise_inplace_rows(node, graph), "pointwise_inplace": pointwise_inplace(node, graph),
                "zp_y": a.requant.zero_point if a.requant else 0,
                "zp_r": graph.tensors[node.inputs[3]].zero_point if a.residual else 0}

    def macs(self, node, graph):
        y = graph.tensors[node.outputs[0]]
        a = self.attrs(node)
        kh, kw = a.kernel
        cin = 1 if a.depthwise else graph.tensors[node.inputs[0]].shape[2]
        return y.size * kh * kw * cin
