"""Shared numpy helpers for windowed kernels (convolution, pooling) in the simulator."""
from __future__ import annotations

import numpy as np


def pad_hw(x: np.ndarray, pad: list[int], value: int) -> np.ndarray:
    """Pad an (N, H, W, C) batch with ``value``; pad = [top, left, bottom, right]."""
    t, l, b, r = pad
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def window_slices(xp: np.ndarray, kernel, stride, dilation, out_hw):
    """Yield ((ky, kx), view) where view[n, oy, ox, c] = xp[n, oy*sh + ky*dh, ox*sw + kx*dw, c]."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    oh, ow = out_hw
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield (ky, kx), xp[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :]
