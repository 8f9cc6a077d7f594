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

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def random_spec(seed: int, max_layers: int = 5) -> dict:
    """A random graph description with valid shapes; deterministic per seed."""
    r = random.Random(seed)
    while True:
        spec = _draw(r, seed, max_layers)
        if check_shapes(spec) is None:
            return spec


def _draw(r: random.Random, seed: int, max_layers: int) -> dict:
    spec = {"kind": "tflite", "seed": seed, "size": [r.randint(1, 12), r.randint(1, 12)],
            "in_ch": r.choice([1, 2, 3, 4, 8]),
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
                layer["out"] = r.randint(1, 10)
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

def _tfl():
    import tflite

    return tflite


class _Writer:
    """Tensors, constant buffers and operators of one subgraph, serialised by :meth:`build`."""

    def __init__(self):
        self.tensors: list[dict] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty buffer
        self.ops: list[tuple] = []
        self.codes: list[int] = []

    def tensor(self, shape, dtype="int8", scale=None, zero_point=None, data=None, qdim=0) -> int:
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(np.asarray(data, dtype=dtype)).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append(dict(shape=list(shape), dtype=dtype, buffer=buf, qdim=qdim,
                                 scale=None if scale is None else np.atleast_1d(np.asarray(scale, np.float32)),
                                 zp=None if zero_point is None else np.atleast_1d(np.asarray(zero_point, np.int64)),
                                 name=f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int], options: str | None = None, **fields) -> None:
        code = getattr(_tfl().BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, options, fields))

    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        import importlib

        import flatbuffers

        tfl = _tfl()

        def mod(name):
            return importlib.import_module(f"tflite.{name}")

        def table_vector(offsets):
            b.StartVector(4, len(offsets), 4)
            for o in reversed(offsets):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        types = {"int8": tfl.TensorType.INT8, "int32": tfl.TensorType.INT32}
        b = flatbuffers.Builder(1024)
        buffers = []
        for data in self.buffers:
            vec = None
            if data:
                b.StartVector(1, len(data), 16)
                b.head = b.head - len(data)
                b.Bytes[b.head:b.head + len(data)] = data
                vec = b.EndVector()
            B = mod("Buffer")
            B.Start(b)
            if vec is not None:
                B.AddData(b, vec)
            buffers.append(B.End(b))
        tensors = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
            q = None
            if t["scale"] is not None:
                scale = b.CreateNumpyVector(t["scale"])
                zp = b.CreateNumpyVector(t["zp"] if t["zp"] is not None else np.zeros(t["scale"].size, np.int64))
                Q = mod("QuantizationParameters")
                Q.Start(b)
                Q.AddScale(b, scale)
                Q.AddZeroPoint(b, zp)
                Q.AddQuantizedDimension(b, t["qdim"])
                q = Q.End(b)
            T = mod("Tensor")
            T.Start(b)
            T.AddShape(b, shape)
            T.AddType(b, types[t["dtype"]])
            T.AddBuffer(b, t["buffer"])
            T.AddName(b, name)
            if q is not None:
                T.AddQuantization(b, q)
            tensors.append(T.End(b))
        ops = []
        for opcode, ins, outs, options, fields in self.ops:
            opt = None
            if options is not None:
                O = mod(options)
                O.Start(b)
                for k, v in fields.items():
                    getattr(O, f"Add{k}")(b, v)
                opt = O.End(b)
            iv = b.CreateNumpyVector(np.asarray(ins, np.int32))
            ov = b.CreateNumpyVector(np.asarray(outs, np.int32))
            P = mod("Operator")
            P.Start(b)
            P.AddOpcodeIndex(b, opcode)
            P.AddInputs(b, iv)
            P.AddOutputs(b, ov)
            if opt is not None:
                P.AddBuiltinOptionsType(b, getattr(tfl.BuiltinOptions, options))
                P.AddBuiltinOptions(b, opt)
            ops.append(P.End(b))
        S = mod("SubGraph")
        tv, opv = table_vector(tensors), table_vector(ops)
        iv = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        ov = b.CreateNumpyVector(np.asarray(outputs, np.int32))
        sname = b.CreateString("main")
        S.Start(b)
        S.AddTensors(b, tv)
        S.AddInputs(b, iv)
        S.AddOutputs(b, ov)
        S.AddOperators(b, opv)
        S.AddName(b, sname)
        sub = S.End(b)
        codes = []
        for c in self.codes:
            C = mod("OperatorCode")
            C.Start(b)
            C.AddDeprecatedBuiltinCode(b, min(c, 127))
            C.AddBuiltinCode(b, c)
            C.AddVersion(b, 1)
            codes.append(C.End(b))
        cv, sv, bv = table_vector(codes), table_vector([sub]), table_vector(buffers)
        desc = b.CreateString("edgekit fuzz graph")
        M = mod("Model")
        M.Start(b)
        M.AddVersion(b, 3)
        M.AddOperatorCodes(b, cv)
        M.AddSubgraphs(b, sv)
        M.AddDescription(b, desc)
        M.AddBuffers(b, bv)
        b.Finish(M.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# ---------------------------------------------------------------- spec -> flatbuffer

def _conv(wr: _Writer, rng, x: int, shape, scale: float, layer: dict, oc: int | None = None, depthwise=False):
    """CONV_2D / DEPTHWISE_CONV_2D with random int8 weights whose output spreads over ~35 codes."""
    tfl = _tfl()
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
    tfl = _tfl()
    wr = _Writer()
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
