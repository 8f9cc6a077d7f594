"""Random quantized Brevitas graphs, described by a JSON-able spec and exported to QONNX.

A spec is a dict: ``{"kind": "qonnx", "dims": 1|2, "in_ch": C, "size": [H, W] | [L],
"input": <quantizer>, "layers": [<layer>, ...]}``. :func:`random_spec` draws one from a
seed (deterministic: the same seed gives the same spec, and :func:`build_model` the same
weights); the shrinker edits specs, so every shrunk graph is again a valid spec.

A quantizer is ``{"bits", "signed", "scale": "pow2"|"float", "asym"}``; a weight
quantizer ``{"bits", "per_channel", "scale"}``. Every layer that changes values ends in
an activation quantizer (``"act"``), as a QONNX graph needs between integer ops.
"""
from __future__ import annotations

import random
from pathlib import Path

# Feature-map layers and the later ones (after "flatten" or "gap" only these).
# "bn" alone (not after a conv) is rare: edgekit refuses it, one refusal class is enough.
FEATURE_OPS = ("conv", "conv", "conv", "dw", "pool", "pool", "clip", "table", "residual", "concat",
               "relu") * 4 + ("bn",)
VECTOR_OPS = ("dense", "dense", "clip", "table", "relu")


def _act(r: random.Random, *, unsigned_ok: bool = True) -> dict:
    bits = r.choice([8, 8, 8, 4, 6, 2, 3, 5, 7, 10, 12, 16])
    scale = r.choice(["pow2", "pow2", "float"])
    signed = not (unsigned_ok and r.random() < 0.25)
    # asymmetric (nonzero zero point): Brevitas' shifted unsigned float quantizer, 8 bits
    asym = scale == "float" and r.random() < 0.1
    if asym:
        bits, signed = 8, False
    return {"bits": bits, "signed": signed, "scale": scale, "asym": asym}


def _weight(r: random.Random) -> dict:
    # 1 bit (Brevitas exports a BipolarQuant, which edgekit refuses) now and then only
    return {"bits": r.choice([8, 8, 8, 4, 4, 2, 3, 5, 6, 7] * 3 + [1]), "per_channel": r.random() < 0.35,
            "scale": r.choice(["pow2", "pow2", "float"])}


def _relu_act(r: random.Random) -> dict:
    a = _act(r)
    a.update(signed=False, asym=False)
    return a


def random_spec(seed: int, max_layers: int = 5) -> dict:
    """A random graph description with valid shapes; deterministic per seed."""
    r = random.Random(seed)
    while True:  # redraw (from the same stream) until every layer has an output of size >= 1
        spec = _draw(r, seed, max_layers)
        if check_shapes(spec) is None:
            return spec


def random_fpga_spec(seed: int, max_layers: int = 5) -> dict:
    """A random graph in what the FPGA backend (hls4ml 1.3's QONNX path) builds: a 2D chain of
    convolutions (no dilation, groups 1 or depthwise without multiplier, per-tensor weights),
    2x2 max pools and ReLUs, then optionally flatten and dense layers. Most quantizers have
    power-of-two scales, where the C-simulation must be exact."""
    r = random.Random(seed)
    while True:
        spec = _draw_fpga(r, seed, max_layers)
        if check_shapes(spec) is None:
            return spec


def _draw_fpga(r: random.Random, seed: int, max_layers: int) -> dict:
    def act(unsigned=False):
        return {"bits": r.choice([8, 8, 6, 4]), "signed": not unsigned, "scale": r.choice(["pow2"] * 4 + ["float"]),
                "asym": False}

    def weight():
        return {"bits": r.choice([8, 8, 6, 4, 3, 2]), "per_channel": False, "scale": "pow2"}

    channels = r.choice([1, 2, 3, 4])
    spec = {"kind": "qonnx", "seed": seed, "dims": 2, "in_ch": channels, "size": [r.randint(3, 8), r.randint(3, 8)],
            "input": {"bits": 8, "signed": True, "scale": "pow2", "asym": False},
            "spread": r.choice([1.0, 2.0, 8.0]), "layers": []}
    layers = spec["layers"]
    vector = False
    for _ in range(r.randint(1, max_layers)):
        op = r.choice(["dense", "dense", "relu"] if vector else ["conv", "conv", "dw", "pool", "relu", "dense"])
        if op == "conv":
            layers.append({"op": "conv", "out": r.randint(1, 6), "k": r.choice([1, 3, 3]),
                           "stride": r.choice([1, 1, 2]),
                           "pad": r.choice([0, 1]), "dil": 1, "groups": 1, "bias": True, "w": weight(),
                           "act": act()})
            channels = layers[-1]["out"]
        elif op == "dw":
            layers.append({"op": "conv", "out": channels, "k": 3, "stride": 1, "pad": 1, "dil": 1, "groups": channels,
                           "bias": True, "w": weight(), "act": act()})
        elif op == "pool":
            layers.append({"op": "pool", "kind": "max", "k": 2, "stride": 2, "pad": 0})
        elif op == "relu":
            layers.append({"op": "relu", "act": act(unsigned=True)})
        else:
            if not vector:
                layers.append({"op": "flatten"})
                vector = True
            layers.append({"op": "dense", "out": r.choice([2, 4, 5, 8]), "bias": True, "w": weight(), "act": act()})
    return spec


def _draw(r: random.Random, seed: int, max_layers: int) -> dict:
    dims = r.choice([1, 2, 2])
    in_ch = r.choice([1, 2, 3, 4, 5, 8])
    size = [r.randint(1, 24)] if dims == 1 else [r.randint(1, 10), r.randint(1, 10)]
    spec = {"kind": "qonnx", "seed": seed, "dims": dims, "in_ch": in_ch, "size": size,
            "input": _act(r), "spread": r.choice([0.5, 1.0, 2.0, 8.0]), "layers": []}
    layers = spec["layers"]
    channels = in_ch
    vector = False
    for _ in range(r.randint(1, max_layers)):
        op = r.choice(VECTOR_OPS if vector else FEATURE_OPS)
        if op == "conv":
            groups = r.choice([1, 1, 1, 2, 3]) if channels > 1 else 1
            if channels % groups:
                groups = 1
            out = groups * r.randint(1, max(1, 8 // groups))
            layer = {"op": "conv", "out": out, "k": r.choice([1, 1, 2, 3, 3, 5]), "stride": r.choice([1, 1, 2, 3]),
                     "pad": r.choice([0, 0, 1, 2]), "dil": r.choice([1, 1, 1, 2]), "groups": groups,
                     "bias": r.random() < 0.85, "bn": r.random() < 0.2, "w": _weight(r)}
            channels = out
        elif op == "dw":
            mult = r.choice([1, 1, 2, 3])
            layer = {"op": "conv", "out": channels * mult, "k": r.choice([1, 3, 3, 5]), "stride": r.choice([1, 1, 2]),
                     "pad": r.choice([0, 1, 1, 2]), "dil": r.choice([1, 1, 2]), "groups": channels,
                     "bias": r.random() < 0.85, "w": _weight(r)}
            channels *= mult
        elif op == "pool":
            kind = r.choice(["max", "avg", "trunc", "gap"] if dims == 2 else ["max", "avg", "gap"])
            k = r.choice([1, 2, 2, 3])
            layer = {"op": "pool", "kind": kind, "k": k, "stride": r.choice([k, k, 1, 2]),
                     "pad": r.choice([0, 0, 1]) if kind == "max" and k > 1 else 0}
            if kind == "trunc":
                layer["bits"] = r.choice([None, None, 4, 6, 8, 10])
        elif op == "dense":
            if not vector:
                layers.append({"op": "flatten"})
                vector = True
            layer = {"op": "dense", "out": r.choice([1, 2, 3, 4, 5, 8, 10, 16]), "bias": r.random() < 0.85,
                     "w": _weight(r)}
            channels = layer["out"]
        elif op == "bn":
            layer = {"op": "bn"}
        elif op == "clip":
            lo = r.choice([0.0, -0.5, -1.0])
            layer = {"op": "clip", "lo": lo, "hi": r.choice([0.75, 1.0, 6.0])}
        elif op == "table":
            layer = {"op": "table", "fn": r.choice(["sigmoid", "tanh"])}
        elif op == "residual":
            layer = {"op": "residual", "k": r.choice([1, 3]), "w": _weight(r), "branch": _act(r)}
        elif op == "concat":
            layer = {"op": "concat", "a": r.randint(1, 4), "b": r.randint(1, 4), "ka": r.choice([1, 3]),
                     "kb": r.choice([1, 3]), "w": _weight(r)}
            channels = layer["a"] + layer["b"]
        else:  # relu
            layer = {"op": "relu"}
        if layer["op"] not in ("flatten",) and not (layer["op"] == "pool" and layer["kind"] in ("max", "trunc")):
            layer["act"] = _relu_act(r) if op == "relu" else _act(r)
        if layer["op"] == "pool" and layer["kind"] == "gap":
            layers.append(layer)
            layers.append({"op": "flatten"})
            vector = True
            continue
        layers.append(layer)
    if vector and r.random() < 0.25 and layers[-1]["op"] == "dense":
        layers.append({"op": "softmax", "act": _relu_act(r)})
    # A Brevitas layer with weights cannot take an asymmetric (zero point != 0) input: keep
    # asymmetric quantizers for the output only.
    for q in [spec["input"]] + [v for layer in layers[:-1] for v in layer.values() if isinstance(v, dict)]:
        if q.get("asym"):
            q["asym"] = False
    return spec


# ---------------------------------------------------------------- Brevitas model

def _act_quant(q: dict):
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, ShiftedUint8ActPerTensorFloat,
                                Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)

    if q.get("asym"):
        return ShiftedUint8ActPerTensorFloat
    if q["scale"] == "pow2":
        return Int8ActPerTensorFixedPoint if q["signed"] else Uint8ActPerTensorFixedPoint
    return Int8ActPerTensorFloat if q["signed"] else Uint8ActPerTensorFloat


def _weight_quant(q: dict):
    from brevitas.quant import (Int8WeightPerChannelFixedPointMSE, Int8WeightPerChannelFloat,
                                Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat)

    if q["scale"] == "pow2":
        return Int8WeightPerChannelFixedPointMSE if q["per_channel"] else Int8WeightPerTensorFixedPoint
    return Int8WeightPerChannelFloat if q["per_channel"] else Int8WeightPerTensorFloat


def _qid(q: dict):
    import brevitas.nn as qnn

    return qnn.QuantIdentity(act_quant=_act_quant(q), bit_width=q["bits"], return_quant_tensor=True)


def _qrelu(q: dict):
    import brevitas.nn as qnn

    return qnn.QuantReLU(act_quant=_act_quant(q), bit_width=q["bits"], return_quant_tensor=True)


def _qconv(dims: int, cin: int, cout: int, k: int, w: dict, **kw):
    import brevitas.nn as qnn
    from brevitas.quant import Int32Bias

    cls = qnn.QuantConv1d if dims == 1 else qnn.QuantConv2d
    bias = kw.pop("bias", True)
    return cls(cin, cout, k, weight_quant=_weight_quant(w), weight_bit_width=w["bits"],
               bias=bias, bias_quant=Int32Bias if bias else None, return_quant_tensor=True, **kw)


def output_size(n: int, k: int, stride: int, pad: int, dil: int = 1) -> int:
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _module_for(dims: int, channels: int, size: list, layer: dict):
    """The layer's torch module(s), its output channels and spatial size (None: flattened)."""
    import brevitas.nn as qnn
    import torch
    from torch import nn

    op = layer["op"]
    if op == "conv":
        m = _qconv(dims, channels, layer["out"], layer["k"], layer["w"], stride=layer["stride"],
                   padding=layer["pad"], dilation=layer["dil"], groups=layer["groups"], bias=layer["bias"])
        size = [output_size(n, layer["k"], layer["stride"], layer["pad"], layer["dil"]) for n in size]
        mods = {"conv": m, "q": _qid(layer["act"])}
        if layer.get("bn"):  # folded into the conv by the frontend
            mods["bn"] = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(layer["out"])
        return nn.ModuleDict(mods), layer["out"], size
    if op == "pool":
        kind, k, s = layer["kind"], layer["k"], layer["stride"]
        if kind == "gap":
            pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
            return nn.ModuleDict({"pool": pool, "q": _qid(layer["act"])}), channels, [1] * dims
        pad = layer.get("pad", 0)
        new = [output_size(n, k, s, pad) for n in size]
        if kind == "max":
            pool = (nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(k, stride=s, padding=pad)
            return nn.ModuleDict({"pool": pool}), channels, new
        if kind == "avg":
            pool = (nn.AvgPool1d if dims == 1 else nn.AvgPool2d)(k, stride=s)
            return nn.ModuleDict({"pool": pool, "q": _qid(layer["act"])}), channels, new
        kw = {} if layer.get("bits") is None else {"bit_width": layer["bits"]}
        return nn.ModuleDict({"trunc": qnn.TruncAvgPool2d(k, stride=s, return_quant_tensor=True, **kw)}), channels, new
    if op == "dense":
        from brevitas.quant import Int32Bias

        n_in = channels * (1 if size is None else int(torch.tensor(size).prod()))
        fc = qnn.QuantLinear(n_in, layer["out"], bias=layer["bias"], weight_quant=_weight_quant(layer["w"]),
                             weight_bit_width=layer["w"]["bits"], bias_quant=Int32Bias if layer["bias"] else None,
                             return_quant_tensor=True)
        return nn.ModuleDict({"fc": fc, "q": _qid(layer["act"])}), layer["out"], None
    if op == "flatten":
        n = channels * (1 if size is None else int(torch.tensor(size).prod()))
        return nn.ModuleDict({}), n, None
    if op == "bn":
        bn = nn.BatchNorm1d(channels) if (dims == 1 or size is None) else nn.BatchNorm2d(channels)
        return nn.ModuleDict({"bn": bn, "q": _qid(layer["act"])}), channels, size
    if op == "clip":
        return nn.ModuleDict({"clip": nn.Hardtanh(layer["lo"], layer["hi"]), "q": _qid(layer["act"])}), channels, size
    if op == "table":
        fn = nn.Sigmoid() if layer["fn"] == "sigmoid" else nn.Tanh()
        return nn.ModuleDict({"fn": fn, "q": _qid(layer["act"])}), channels, size
    if op == "relu":
        return nn.ModuleDict({"relu": _qrelu(layer["act"])}), channels, size
    if op == "softmax":
        return nn.ModuleDict({"q": _qid(layer["act"])}), channels, size
    if op == "residual":
        k = layer["k"]
        conv = _qconv(dims, channels, channels, k, layer["w"], padding=k // 2)
        return nn.ModuleDict({"conv": conv, "qb": _qid(layer["branch"]), "qs": _qid(layer["branch"]),
                              "q": _qid(layer["act"])}), channels, size
    if op == "concat":
        a = _qconv(dims, channels, layer["a"], layer["ka"], layer["w"], padding=layer["ka"] // 2)
        b = _qconv(dims, channels, layer["b"], layer["kb"], layer["w"], padding=layer["kb"] // 2)
        return nn.ModuleDict({"a": a, "b": b, "shared": _qid(layer["act"])}), layer["a"] + layer["b"], size
    raise ValueError(f"unknown layer op {op!r}")


def build_model(spec: dict):
    """The Brevitas model of ``spec`` with seeded random weights, calibrated on random data."""
    import torch
    from torch import nn

    class FuzzNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = _qid(spec["input"])
            self.blocks = nn.ModuleList()
            channels, size = spec["in_ch"], list(spec["size"])
            for layer in spec["layers"]:
                m, channels, size = _module_for(spec["dims"], channels, size, layer)
                self.blocks.append(m)

        def forward(self, x):
            x = self.inp(x)
            for layer, m in zip(spec["layers"], self.blocks):
                x = _forward(layer, m, x)
            return x.value if hasattr(x, "value") else x

    torch.manual_seed(spec["seed"])
    model = FuzzNet()
    shape = input_shape(spec)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, *shape) * spec.get("spread", 2.0))
    return model.eval()


def _value(x):
    return x.value if hasattr(x, "value") else x


def _forward(layer: dict, m, x):
    import torch

    op = layer["op"]
    if op == "conv":
        y = m["conv"](x)
        return m["q"](m["bn"](_value(y)) if "bn" in m else y)
    if op == "pool":
        if "trunc" in m:
            return m["trunc"](x)
        y = m["pool"](x)
        return m["q"](_value(y)) if "q" in m else y
    if op == "dense":
        return m["q"](m["fc"](x))
    if op == "flatten":
        return torch.flatten(x, 1)
    if op == "bn":
        return m["q"](m["bn"](_value(x)))
    if op == "clip":
        return m["q"](m["clip"](_value(x)))
    if op == "table":
        return m["q"](m["fn"](_value(x)))
    if op == "relu":
        return m["relu"](x)
    if op == "softmax":
        return m["q"](torch.softmax(_value(x), dim=1))
    if op == "residual":
        y = m["qb"](m["conv"](x))
        return m["q"](_value(m["qs"](x)) + _value(y))
    if op == "concat":
        return m["shared"](torch.cat([_value(m["shared"](m["a"](x))), _value(m["shared"](m["b"](x)))], dim=1))
    raise ValueError(f"unknown layer op {op!r}")


def input_shape(spec: dict) -> tuple:
    return (spec["in_ch"], *spec["size"])


def check_shapes(spec: dict) -> str | None:
    """Why ``spec`` has no valid torch shapes (a layer shrinks a dimension below 1), or None.
    Such specs are not graphs at all: the generator and the shrinker skip them."""
    channels, size = spec["in_ch"], list(spec["size"])
    for i, layer in enumerate(spec["layers"]):
        op = layer["op"]
        if size is None and op in ("conv", "pool", "residual", "concat"):
            return f"layer {i}: {op} after flatten"
        if size is not None and op in ("dense", "softmax"):
            return f"layer {i}: {op} on a feature map (needs a flatten before it)"
        if op == "conv":
            if channels % layer["groups"] or layer["out"] % layer["groups"]:
                return f"layer {i}: groups {layer['groups']} do not divide {channels} -> {layer['out']}"
            size = [output_size(n, layer["k"], layer["stride"], layer["pad"], layer["dil"]) for n in size]
            channels = layer["out"]
        elif op == "pool" and layer["kind"] == "gap":
            size = [1] * len(size)
        elif op == "pool":
            if layer.get("pad", 0) * 2 > layer["k"]:
                return f"layer {i}: pool padding over half the kernel"
            size = [output_size(n, layer["k"], layer["stride"], layer.get("pad", 0)) for n in size]
        elif op == "concat":
            channels = layer["a"] + layer["b"]
        elif op == "dense":
            channels, size = layer["out"], None
        elif op == "flatten":
            channels, size = channels * (1 if size is None else _prod(size)), None
        if size is not None and min(size) < 1:
            return f"layer {i}: {op} makes a dimension {min(size)}"
    return None


def _prod(xs) -> int:
    p = 1
    for v in xs:
        p *= v
    return p


def export(spec: dict, path: str | Path) -> Path:
    """Build, calibrate and export ``spec`` to a QONNX file at ``path``."""
    import torch

    from ..qat import export_qonnx

    model = build_model(spec)
    return export_qonnx(model, torch.zeros(1, *input_shape(spec)), path)


def describe(spec: dict) -> str:
    """A short one-line description, e.g. ``2D 3x8x8 conv3/s2,pool-max,dense5``."""
    parts = []
    for layer in spec["layers"]:
        op = layer["op"]
        if op == "conv":
            parts.append(f"conv{layer['k']}/s{layer['stride']}p{layer['pad']}d{layer['dil']}"
                         f"g{layer['groups']}->{layer['out']}w{layer['w']['bits']}")
        elif op == "pool":
            parts.append(f"{layer['kind']}pool{layer.get('k', '')}")
        elif op == "dense":
            parts.append(f"dense{layer['out']}w{layer['w']['bits']}")
        elif op in ("table",):
            parts.append(layer["fn"])
        else:
            parts.append(op)
    return f"{spec['dims']}D {'x'.join(map(str, input_shape(spec)))} " + ",".join(parts)
