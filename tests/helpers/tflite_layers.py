"""Layers with random int8 weights for synthetic .tflite models (one builder for the TFLite import
tests, the per-operator tests and the DSP/Helium kernel chains).

Scales are chosen so no layer saturates or collapses: a layer's output scale puts its
accumulator's spread at about 35 output codes for inputs whose codes spread ``x_rms``
around their zero point.
"""
from __future__ import annotations

import numpy as np

from edgekit.frontends.tflite.writer import tflite


def conv_layer(b, rng, x, x_shape, x_scale, oc, k, stride=1, padding="SAME", act=0, depthwise=False, mult=1,
               per_channel=True, dilation=1, x_rms=35.0, zp_range=20, zp=None):
    """Adds a CONV_2D / DEPTHWISE_CONV_2D (``k`` an int or (kh, kw)); returns (out index, out shape
    (h, w, c), out scale, out zero point).

    ``act`` is a TFLite ActivationFunctionType, or a function that draws one (called after the
    output zero point is drawn from ``rng``, in [-zp_range, zp_range), unless ``zp`` gives it)."""
    h, w, c = x_shape
    kh, kw = (k, k) if isinstance(k, int) else k
    if depthwise:
        oc = c * mult
        wshape, fan_in, qdim = (1, kh, kw, oc), kh * kw, 3
    else:
        wshape, fan_in, qdim = (oc, kh, kw, c), kh * kw * c, 0
    w_scale = rng.uniform(0.004, 0.02, oc if per_channel else 1).astype(np.float32)
    wi = b.tensor(wshape, "int8", w_scale, np.zeros(w_scale.size, np.int64), rng.integers(-127, 128, wshape),
                  qdim=qdim)
    bi = b.tensor((oc,), "int32", np.resize(np.float32(x_scale) * w_scale, oc), np.zeros(oc, np.int64),
                  rng.integers(-3000, 3000, oc))
    ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - ekh) // stride + 1, (w - ekw) // stride + 1
    out_scale = float(x_scale * w_scale.mean() * np.sqrt(fan_in) * x_rms * 73 / 35)
    drawn = int(rng.integers(-zp_range, zp_range))
    zp = drawn if zp is None else zp
    y = b.act((1, oh, ow, oc), out_scale, zp)
    fields = dict(Padding=getattr(tflite.Padding, padding), StrideW=stride, StrideH=stride,
                  FusedActivationFunction=act() if callable(act) else act,
                  DilationWFactor=dilation, DilationHFactor=dilation)
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wi, bi], [y], "DepthwiseConv2DOptions", DepthMultiplier=mult, **fields)
    else:
        b.op("CONV_2D", [x, wi, bi], [y], "Conv2DOptions", **fields)
    return y, (oh, ow, oc), out_scale, zp


def fc_layer(b, rng, x, n, x_scale, n_out, x_rms, logit_scale, zp=None, per_channel=True):
    """FULLY_CONNECTED whose logits spread about 35 codes of ``logit_scale``; ``zp`` None: drawn
    from ``rng`` in [-20, 20) after the weights. Returns the output index."""
    w_mean = logit_scale * 35 / (x_scale * np.sqrt(n) * x_rms * 73)
    w_scale = (w_mean * rng.uniform(0.8, 1.2, n_out if per_channel else 1)).astype(np.float32)
    wi = b.tensor((n_out, n), "int8", w_scale, np.zeros(w_scale.size, np.int64), rng.integers(-127, 128, (n_out, n)))
    bi = b.tensor((n_out,), "int32", np.resize(np.float32(x_scale) * w_scale, n_out), np.zeros(n_out, np.int64),
                  rng.integers(-2000, 2000, n_out))
    if zp is None:
        zp = int(rng.integers(-20, 20))
    y = b.act((1, n_out), logit_scale, zp)
    b.op("FULLY_CONNECTED", [x, wi, bi], [y], "FullyConnectedOptions",
         FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    return y


def flatten(b, x, shape, scale, zp):
    """RESHAPE to (1, n); returns (index, n)."""
    n = int(np.prod(shape))
    flat = b.act((1, n), scale, zp)
    b.op("RESHAPE", [x, b.tensor((2,), "int32", data=[1, n])], [flat], "ReshapeOptions")
    return flat, n
