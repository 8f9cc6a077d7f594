"""Random int8 TFLite graphs, described by a JSON-able spec and written as flatbuffers.

Spec: ``{"kind": "tflite", "seed", "size": [H, W], "in_ch", "input": {"scale", "zp"},
"layers": [...]}`` with layers ``conv`` (CONV_2D), ``dw`` (DEPTHWISE_CONV_2D with a
multiplier), ``pool`` (MAX/AVERAGE_POOL_2D), ``add`` (a residual ADD of the current tensor
and a 1x1 CONV_2D of it), ``requant`` (int8 -> int8 QUANTIZE), ``fc`` (RESHAPE +
FULLY_CONNECTED), ``softmax``. Weights, biases and zero points come from a numpy generator
seeded by the spec's seed and the layer index, so shrinking one layer leaves the others'
values as they were.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..frontends.tflite.writer import TfliteBuilder

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def random_spec(seed: int, max_layers: int = 5, wide: bool = False) -> dict:
    """A random graph description with valid shapes; deterministic per seed."""
    r = random.Random(seed)
    while True:
        spec = _draw(r, seed, max_layers, wide)
        if check_shapes(spec) is None:
            return spec


# --wide: channel counts of MobileNet-like layers, where the records of a layer outweigh its code, so the lean
# layouts (dw3_compact, compact GEMM records) and conv2d_gemm_widen get taken (docs/fuzz.md, build modes)
WIDE_CHANNELS = [8, 12, 16, 24, 32, 48, 64]


def _draw(r: random.Random, seed: int, max_layers: int, wide: bool = False) -> dict:
    spec = {"kind": "tflite", "seed": seed, "size": [r.randint(1, 12), r.randint(1, 12)],
            "in_ch": r.choice([3, 8, 16, 24] if wide else [1, 2, 3, 4, 8]),
            "input": {"scale": r.choice([1 / 128, 1 / 255, 0.02, 0.05, 0.1]), "zp": r.choice([0, 0, -128, 7, -20])},
            "layers": []}
    vector = False
    for _ in range(r.randint(1, max_layers)):
        op = r.choice(["fc", "requant"] if vector else ["conv", "conv", "dw", "pool", "add", "requant", "fc"])
        if op in ("conv", "dw"):
            layer = {"op": op, "k": r.choice([1, 2, 3, 3, 5]), "stride": r.choice([1, 1, 2, 3]),
                     "dil": r.choice([1, 1, 1, 2]), "padding": r.choice(["SAME", "VALID"]),
                     "act": r.choice(ACTS), "per_channel": r.random() < 0.7}
            if op == "conv":
                layer["out"] = r.choice(WIDE_CHANNELS) if wide else r.randint(1, 10)
            else:
                layer["mult"] = r.choice([1, 1, 2, 3])
        elif op == "pool":
            k = r.choice([1, 2, 3])
            layer = {"op": "pool", "kind": r.choice(["max", "avg"]), "k": k, "stride": r.choice([k, 1, 2]),
                     "padding": r.choice(["SAME", "VALID"]), "act": r.choice(ACTS[:3])}
        elif op == "add":
            layer = {"op": "add", "act": r.choice(ACTS[:3]), "per_channel": r.random() < 0.5}
        elif op == "requant":
            layer = {"op": "requant", "ratio": r.choice([0.5, 0.77, 1.0, 1.37, 3.0])}
        else:
            layer = {"op": "fc", "out": r.choice([1, 2, 3, 4, 5, 10, 16]), "per_channel": r.random() < 0.4,
                     "act": r.choice(ACTS[:3])}
            vector = True
        spec["layers"].append(layer)
    if vector and r.random() < 0.3:
        spec["layers"].append({"op": "softmax", "beta": r.choice([1.0, 0.7, 2.0])})
    return spec


def _same_or_valid(padding: str, n: int, k: int, s: int, d: int) -> int:
    ek = d * (k - 1) + 1
    return -(-n // s) if padding == "SAME" else (n - ek) // s + 1


def check_shapes(spec: dict) -> str | None:
    """Why ``spec`` has no valid shapes, or None."""
    h, w = spec["size"]
    c = spec["in_ch"]
    vector = False
    for i, layer in enumerate(spec["layers"]):
        op = layer["op"]
        if vector and op in ("conv", "dw", "pool", "add"):
            return f"layer {i}: {op} after fully connected"
        if op in ("conv", "dw", "pool"):
            d = layer.get("dil", 1)
            h = _same_or_valid(layer["padding"], h, layer["k"], layer["stride"], d)
            w = _same_or_valid(layer["padding"], w, layer["k"], layer["stride"], d)
            c = layer["out"] if op == "conv" else c * layer.get("mult", 1)
        elif op == "fc":
            vector, h, w, c = True, 1, 1, layer["out"]
        elif op == "softmax" and not vector:
            return f"layer {i}: softmax on a feature map"
        if min(h, w, c) < 1:
            return f"layer {i}: {op} makes a dimension {min(h, w, c)}"
    return None


# ---------------------------------------------------------------- flatbuffer writer

# ---------------------------------------------------------------- spec -> flatbuffer

def _conv(wr: TfliteBuilder, rng, x: int, shape, scale: float, layer: dict, oc: int | None = None,
          depthwise=False):
    """CONV_2D / DEPTHWISE_CONV_2D with random int8 weights whose output spreads over ~35 codes."""
    import tflite as tfl
    h, w, c = shape
    k = layer.get("k", 1)
    stride, dil, padding = layer.get("stride", 1), layer.get("dil", 1), layer.get("padding", "SAME")
    if depthwise:
        oc = c * layer["mult"]
        wshape, fan_in, qdim = (1, k, k, oc), k * k, 3
    else:
        wshape, fan_in, qdim = (oc, k, k, c), k * k * c, 0
    w_scale = rng.uniform(0.004, 0.02, oc if layer.get("per_channel", True) else 1).astype(np.float32)
    wi = wr.tensor(wshape, "int8", w_scale, np.zeros(w_scale.size, np.int64), rng.integers(-127, 128, wshape),
                   qdim=qdim)
    bias_scale = (np.float32(scale) * w_scale).astype(np.float32)
    bi = wr.tensor((oc,), "int32", np.resize(bias_scale, oc), np.zeros(oc, np.int64), rng.integers(-3000, 3000, oc))
    oh = _same_or_valid(padding, h, k, stride, dil)
    ow = _same_or_valid(padding, w, k, stride, dil)
    out_scale = float(scale * w_scale.mean() * np.sqrt(fan_in) * 30 * 73 / 35)
    y = wr.tensor((1, oh, ow, oc), "int8", out_scale, int(rng.integers(-20, 20)))
    fields = dict(Padding=getattr(tfl.Padding, padding), StrideW=stride, StrideH=stride,
                  FusedActivationFunction=getattr(tfl.ActivationFunctionType, layer.get("act", "NONE")),
                  DilationWFactor=dil, DilationHFactor=dil)
    if depthwise:
        wr.op("DEPTHWISE_CONV_2D", [x, wi, bi], [y], "DepthwiseConv2DOptions", DepthMultiplier=layer["mult"], **fields)
    else:
        wr.op("CONV_2D", [x, wi, bi], [y], "Conv2DOptions", **fields)
    return y, (oh, ow, oc), out_scale


def to_tflite(spec: dict) -> bytes:
    """The flatbuffer of ``spec``."""
    import tflite as tfl
    wr = TfliteBuilder("edgekit fuzz graph")
    h, w = spec["size"]
    shape = (h, w, spec["in_ch"])
    scale = float(spec["input"]["scale"])
    x = wr.tensor((1,) + shape, "int8", scale, spec["input"]["zp"])
    inp = x
    vector = False
    for i, layer in enumerate(spec["layers"]):
        rng = np.random.default_rng([spec["seed"], i])
        op = layer["op"]
        act = getattr(tfl.ActivationFunctionType, layer.get("act", "NONE"))
        if op == "conv":
            x, shape, scale = _conv(wr, rng, x, shape, scale, layer, oc=layer["out"])
        elif op == "dw":
            x, shape, scale = _conv(wr, rng, x, shape, scale, layer, depthwise=True)
        elif op == "pool":
            k, s = layer["k"], layer["stride"]
            oh = _same_or_valid(layer["padding"], shape[0], k, s, 1)
            ow = _same_or_valid(layer["padding"], shape[1], k, s, 1)
            zp = int(wr.tensors[x]["zp"][0])
            shape = (oh, ow, shape[2])
            y = wr.tensor((1,) + shape, "int8", scale, zp)  # pooling keeps the quantization
            wr.op("MAX_POOL_2D" if layer["kind"] == "max" else "AVERAGE_POOL_2D", [x], [y], "Pool2DOptions",
                  Padding=getattr(tfl.Padding, layer["padding"]), StrideW=s, StrideH=s, FilterWidth=k,
                  FilterHeight=k, FusedActivationFunction=act)
            x = y
        elif op == "add":
            branch, _, s_b = _conv(wr, rng, x, shape, scale, {"k": 1, "per_channel": layer["per_channel"]},
                                   oc=shape[2])
            s_out = float(np.hypot(scale, s_b))
            y = wr.tensor((1,) + shape, "int8", s_out, int(rng.integers(-10, 10)))
            wr.op("ADD", [x, branch], [y], "AddOptions", FusedActivationFunction=act)
            x, scale = y, s_out
        elif op == "requant":
            scale = scale * layer["ratio"]
            y = wr.tensor(wr.tensors[x]["shape"], "int8", scale, int(rng.integers(-10, 10)))
            wr.op("QUANTIZE", [x], [y])
            x = y
        elif op == "fc":
            n = int(np.prod(shape))
            if not vector:
                flat = wr.tensor((1, n), "int8", scale, int(wr.tensors[x]["zp"][0]))
                wr.op("RESHAPE", [x, wr.tensor((2,), "int32", data=[1, n])], [flat], "ReshapeOptions")
                x = flat
            n_out = layer["out"]
            w_scale = (0.02 / np.sqrt(n) * rng.uniform(0.8, 1.2, n_out if layer["per_channel"] else 1)
                       ).astype(np.float32)
            wi = wr.tensor((n_out, n), "int8", w_scale, np.zeros(w_scale.size, np.int64),
                           rng.integers(-127, 128, (n_out, n)))
            bi = wr.tensor((n_out,), "int32", np.resize(np.float32(scale) * w_scale, n_out), np.zeros(n_out, np.int64),
                           rng.integers(-2000, 2000, n_out))
            out_scale = float(scale * w_scale.mean() * np.sqrt(n) * 30 * 73 / 35)
            y = wr.tensor((1, n_out), "int8", out_scale, int(rng.integers(-20, 20)))
            wr.op("FULLY_CONNECTED", [x, wi, bi], [y], "FullyConnectedOptions", FusedActivationFunction=act)
            x, scale, shape, vector = y, out_scale, (1, 1, n_out), True
        elif op == "softmax":
            y = wr.tensor(wr.tensors[x]["shape"], "int8", 1 / 256, -128)
            wr.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=layer["beta"])
            x, scale = y, 1 / 256
        else:
            raise ValueError(f"unknown layer op {op!r}")
    return wr.build([inp], [x])


def export(spec: dict, path: str | Path) -> Path:
    """Write the flatbuffer of ``spec`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_tflite(spec))
    return path


def describe(spec: dict) -> str:
    parts = []
    for layer in spec["layers"]:
        op = layer["op"]
        if op in ("conv", "dw"):
            parts.append(f"{op}{layer['k']}/s{layer['stride']}d{layer['dil']}{layer['padding'][0]}"
                         + (f"->{layer['out']}" if op == "conv" else f"x{layer['mult']}"))
        elif op == "pool":
            parts.append(f"{layer['kind']}pool{layer['k']}")
        elif op == "fc":
            parts.append(f"fc{layer['out']}")
        else:
            parts.append(op)
    h, w = spec["size"]
    return f"tflite {h}x{w}x{spec['in_ch']} " + ",".join(parts)
