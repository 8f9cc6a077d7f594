"""Shared numpy helpers for windowed kernels (convolution, pooling) in the simulator: a padded
batch and a strided view of all its windows at once, so a kernel needs no loop per tap or pixel."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def padded(x: np.ndarray, pad: list[int], offset: int, dtype, fill=0) -> np.ndarray:
    """``x - offset`` as ``dtype``, in an (N, H, W, C) batch padded by ``fill``; pad = [top, left, bottom, right]."""
    t, l, b, r = pad
    n, h, w, c = x.shape
    shape = (n, h + t + b, w + l + r, c)
    out = np.zeros(shape, dtype) if fill == 0 else np.full(shape, fill, dtype)
    np.subtract(x, offset, out=out[:, t:t + h, l:l + w, :], casting="unsafe")
    return out


def windows(xp: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """A read-only view (N, oh, ow, kh, kw, C) of a padded batch:
    ``v[n, oy, ox, ky, kx, c] = xp[n, oy*sh + ky*dh, ox*sw + kx*dw, c]`` (no copy)."""
    sn, sy, sx, sc = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    return as_strided(xp, (xp.shape[0], oh, ow, kh, kw, xp.shape[3]),
                      (sn, sy * sh, sx * sw, sy * dh, sx * dw, sc), writeable=False)



def taps(xp: np.ndarray, kernel, stride, out_hw):
    """Each window tap's (N, oh, ow, C) strided slice of a padded batch, in turn: a pool is then
    one elementwise maximum or sum per tap over contiguous rows, which numpy does far faster than
    a reduction over the small window axes of :func:`windows`."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    for ky in range(kh):
        for kx in range(kw):
            yield xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]
