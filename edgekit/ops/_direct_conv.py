"""Exact integer convolutions on PyTorch's float32 CPU convolution (oneDNN's direct algorithm).

Where the integer contract's accumulator bound is below 2^24 (``_gemm.plan_gemm``), every
product and every partial sum of a convolution is an integer float32 holds, so any algorithm
that only multiplies and adds the operands (in any order, fused or not) gives the exact sums.
oneDNN's direct convolution and PyTorch's im2col fallback are such algorithms and need no im2col
copy in the simulator: about three times the throughput of the im2col GEMM for the 3x3 layers
of resnet8. Transform-based algorithms (Winograd, FFT: NNPACK, chosen when oneDNN is disabled)
and reduced-precision float32 modes (bf16, tf32) would round, so :func:`float32_conv` uses
PyTorch only when neither can be in play, and returns None otherwise (the caller then takes its
GEMM path). ``tests/test_sim_exact.py`` checks the sums at the bound.
"""
from __future__ import annotations

import numpy as np

# The backends that compute a float convolution as plain sums of products.
EXACT_BACKENDS = ("Mkldnn", "Slow2d", "SlowDilated2d")


def full_precision_float32(torch) -> bool:
    """True when no float32 reduced-precision mode (bf16, tf32) is set for oneDNN's convolutions."""
    settings = (getattr(torch.backends, "fp32_precision", "none"),
                getattr(torch.backends.mkldnn, "fp32_precision", "none"),
                getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", "none"))
    return all(s in ("none", "ieee") for s in settings) and not getattr(torch.backends.mkldnn, "allow_tf32", None)


def float32_conv(x: np.ndarray, zp: int, w_oihw: np.ndarray, bias: np.ndarray, pad, stride, dilation,
                 groups: int, out_hw) -> np.ndarray | None:
    """``bias + sum over taps of (x - zp) * w`` as float32 (N, oh, ow, oc) for channels-last codes ``x``
    (N, H, W, C) and weights (oc, ic / groups, kh, kw); taps in the padding contribute nothing.
    The caller guarantees the sums' bound, bias included, is below 2^24. None when PyTorch would not compute
    the sums exactly (see the module's doc)."""
    import torch

    if not full_precision_float32(torch):
        return None
    t, l, b, r = pad
    if (t, l) == (b, r):  # symmetric: PyTorch pads with zeros itself
        if x.dtype == np.float32 and zp == 0 and x.flags.c_contiguous:
            xf = x  # the previous layer's float32 codes, as they are (read only)
        else:
            xf = np.empty(x.shape, np.float32)
            np.subtract(x, zp, out=xf, casting="unsafe")
        padding = [t, l]
    else:
        from ._windows import padded

        xf, padding = padded(x, pad, zp, np.float32), [0, 0]
    # A dilation along an axis of kernel size 1 changes nothing, and oneDNN (PyTorch 2.x) crashes
    # with SIGSEGV on 1x1 kernels with dilation > 1 and stride > 1 (fuzz seed 3000181): drop it.
    dilation = [1 if k == 1 else d for k, d in zip(w_oihw.shape[2:], dilation)]
    xt = torch.from_numpy(xf).permute(0, 3, 1, 2)  # NCHW indexing over channels-last memory
    wt = torch.from_numpy(np.ascontiguousarray(w_oihw, np.float32))
    bt = torch.from_numpy(np.asarray(bias, np.float32))
    args = (xt, wt, bt, list(stride), padding, list(dilation), False, [0, 0], groups)
    if torch._C._select_conv_backend(*args).name not in EXACT_BACKENDS:
        return None
    y = torch.nn.functional.conv2d(xt, wt, bt, list(stride), padding, list(dilation), groups)
    oh, ow = out_hw
    if y.shape[2] < oh or y.shape[3] < ow:
        return None
    # channels-last memory again: the (N, oh, ow, oc) view is contiguous
    return y[:, :, :oh, :ow].permute(0, 2, 3, 1).numpy()
