"""TFLite front end: an int8 ``.tflite`` flatbuffer -> edgekit's integer IR.

The flatbuffer is read with the ``tflite`` package (the schema's generated classes).
Every operator is lowered onto an IR op whose arithmetic reproduces the TFLite Micro
reference kernel exactly (docs/integer-contract.md, section 9): requantization with
TFLite's double rounding (``Requant.rounding == "double"``), multipliers computed from
the float32 scales the way TFLite Micro computes them, activation ranges quantized as
TFLite does, average pooling that rounds half away from zero, and TFLite's fixed-point
softmax. TFLite is NHWC, so IR shapes are the TFLite shapes without the batch axis.

Anything else is refused with an :class:`UnsupportedOpError` that names the operator
index and its op name.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ContractError, ModelError, UnsupportedOpError
from ..ir import contract
from ..ir.graph import Graph, InputQuant, Node, Tensor

INT8_MIN, INT8_MAX = -128, 127


def _schema():
    try:
        import tflite
    except ImportError:  # a dependency of edgekit; only a broken installation lacks it
        raise ModelError("reading .tflite files needs the 'tflite' package (pip install tflite)") from None
    return tflite


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


# ---------------------------------------------------------------------------------------
# Reading the flatbuffer
# ---------------------------------------------------------------------------------------
class TfTensor:
    """One tensor of the subgraph: shape, type, quantization and (for constants) data."""

    def __init__(self, model, sub, index: int, raw: bytes, type_names: dict[int, str]):
        t = sub.Tensors(index)
        self.index = index
        self.name = (t.Name() or b"").decode("utf-8", "replace")
        self.type = type_names.get(t.Type(), str(t.Type()))
        self.shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        q = t.Quantization()
        self.scale = np.asarray(q.ScaleAsNumpy(), np.float32) if q is not None and q.ScaleLength() else None
        self.zero_point = np.asarray(q.ZeroPointAsNumpy(), np.int64) if q is not None and q.ZeroPointLength() \
            else None
        self.quantized_dimension = q.QuantizedDimension() if q is not None else 0
        self.data = None
        b = t.Buffer()
        if 0 < b < model.BuffersLength():
            buf = model.Buffers(b)
            if buf.DataLength():
                self.data = buf.DataAsNumpy().tobytes()
            elif buf.Offset() > 1:  # large models keep buffers after the flatbuffer
                self.data = raw[buf.Offset():buf.Offset() + buf.Size()]

    def array(self) -> np.ndarray:
        dtypes = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "INT16": np.int16,
                  "FLOAT32": np.float32}
        arr = np.frombuffer(self.data, dtype=np.dtype(dtypes[self.type]).newbyteorder("<"))
        return arr.reshape(self.shape) if self.shape else arr

    @property
    def per_sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]


def load_tflite(path: str | Path):
    """Read and sanity-check a .tflite file; returns (raw bytes, tflite.Model)."""
    tfl = _schema()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); the file may be truncated "
                         "or not a .tflite model: convert it again")
    try:
        model = tfl.Model.GetRootAs(raw, 0)
        n_sub = model.SubgraphsLength()
        sub = model.Subgraphs(0) if n_sub else None
        if sub is not None:  # touch every table once so a truncated file fails here, not mid-lowering
            for i in range(sub.TensorsLength()):
                sub.Tensors(i).ShapeAsNumpy()
            for i in range(sub.OperatorsLength()):
                sub.Operators(i).InputsAsNumpy()
    except Exception as e:  # flatbuffers raises assorted errors on truncated/corrupt data
        raise ModelError(f"{path}: not a readable TFLite flatbuffer ({type(e).__name__}: {e}); the file may be "
                         "truncated or corrupt: convert it again") from None
    if n_sub != 1:
        raise UnsupportedOpError(f"{path}: {n_sub} subgraphs; edgekit imports models with exactly one")
    return raw, model


# ---------------------------------------------------------------------------------------
# TFLite's parameter arithmetic (float32 scales -> multipliers, activation ranges, padding)
# ---------------------------------------------------------------------------------------
def tfl_round(v: float) -> int:
    """std::round: half away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def activation_range(act: str, scale: float, zero_point: int, where: str) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for int8 outputs (quantize in float32, round half away)."""
    def q(f: float) -> int:
        return zero_point + tfl_round(float(np.float32(f) / np.float32(scale)))

    if act == "NONE":
        return INT8_MIN, INT8_MAX
    if act == "RELU":
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if act == "RELU6":
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(INT8_MIN, q(-1.0)), min(INT8_MAX, q(1.0))
    raise UnsupportedOpError(f"{where}: fused activation {act} is not supported "
                             "(edgekit supports NONE, RELU, RELU6, RELU_N1_TO_1)")


def same_or_valid(padding: str, in_size: int, k: int, stride: int, dilation: int, where: str) -> tuple[int, int, int]:
    """TFLite ComputeOutSize + ComputePaddingWithOffset: (out, pad_before, pad_after)."""
    eff = (k - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size + stride - eff) // stride
    else:
        raise UnsupportedOpError(f"{where}: padding {padding}")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2, total - total // 2


# ---------------------------------------------------------------------------------------
# gemmlowp exp for the softmax table (build time only: the table is a constant)
# ---------------------------------------------------------------------------------------
def _srdhm(a: int, b: int) -> int:
    return int(contract.srdhm(np.int64(a), np.int64(b)))


def _rdbp(x: int, e: int) -> int:
    return int(contract.rdbp(np.int64(x), e))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbp(x4, 2)
    poly = _rdbp(_srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + _srdhm(constant_term, x + poly)


def exp_on_negative_values(a: int, integer_bits: int = 5) -> int:
    """gemmlowp exp_on_negative_values: Q(integer_bits) input <= 0 -> Q0.31 exp(a)."""
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        int(contract.sat_shl(np.int64(a_mod), integer_bits)))  # Rescale<0>
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent and remainder & (1 << (frac_bits + exponent)):
            result = _srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return contract.INT32_MAX if a == 0 else result


def softmax_exp_table(beta: float, input_scale: float) -> np.ndarray:
    """EXP[d] for d = max - x in 0..255, exactly as TFLite's int8 softmax computes exp(-d)."""
    real = min(float(np.float64(np.float32(beta))) * float(np.float64(np.float32(input_scale))) * (1 << 26),
               (1 << 31) - 1.0)  # PreprocessSoftmaxScaling, 5 integer bits
    if not real > 1.0:
        raise ValueError("beta * input scale is too small for TFLite's softmax (multiplier must exceed 1)")
    m, s = contract.quantize_multiplier_tflite(real)
    left = 31 - s  # TFLite's left shift (>= 0)
    diff_min = -math.floor(1.0 * 31 * (1 << 26) / (1 << left))  # CalculateInputRadius(5, left)
    table = np.zeros(256, np.int64)
    for d in range(256):
        if -d >= diff_min:
            scaled = _srdhm(-d * (1 << left), m)  # MultiplyByQuantizedMultiplierGreaterThanOne
            table[d] = exp_on_negative_values(scaled)
    return table


# ---------------------------------------------------------------------------------------
# Lowering
# ---------------------------------------------------------------------------------------
class TfliteLowerer:
    def __init__(self, raw: bytes, model, source: str):
        tfl = _schema()
        self.tfl = tfl
        self.model = model
        self.source = source
        self.sub = model.Subgraphs(0)
        self.op_names = _enum_names(tfl.BuiltinOperator)
        self.act_names = _enum_names(tfl.ActivationFunctionType)
        self.pad_names = _enum_names(tfl.Padding)
        type_names = _enum_names(tfl.TensorType)
        self.t = [TfTensor(model, self.sub, i, raw, type_names) for i in range(self.sub.TensorsLength())]
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.ir_name: dict[int, str] = {}  # TFLite tensor index -> IR tensor name
        self.folded: dict[int, np.ndarray] = {}  # shape arithmetic evaluated at import time

    # -- helpers --------------------------------------------------------------------
    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        c = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if c == self.tfl.BuiltinOperator.CUSTOM:
            return f"CUSTOM({(code.CustomCode() or b'?').decode()})"
        return self.op_names.get(c, f"BUILTIN_{c}")

    def options(self, op, cls, where: str | None = None):
        """The operator's options table; None when absent (an error if ``where`` names the op)."""
        table = op.BuiltinOptions()
        o = cls()
        if table is None:
            if where is not None:
                raise UnsupportedOpError(f"{where}: the operator has no options table")
            return None
        o.Init(table.Bytes, table.Pos)
        return o

    def ir_tensor_name(self, t: TfTensor) -> str:
        short = t.name.split(";")[0].split("/")[-1] or "t"
        short = "".join(ch if ch.isalnum() else "_" for ch in short)[:24]
        return f"t{t.index}_{short}"

    def act(self, where: str, i: int) -> Tensor:
        """The IR tensor of an int8 activation input."""
        if i not in self.ir_name:
            t = self.t[i]
            what = ("a constant" if t.data is not None else
                    "shape arithmetic (SHAPE/STRIDED_SLICE/PACK) that edgekit evaluates at import time"
                    if i in self.folded else "not computed by any operator before it")
            raise UnsupportedOpError(f"{where}: input tensor '{t.name}' is {what}; edgekit expects an int8 "
                                     "activation there")
        return self.tensors[self.ir_name[i]]

    def const(self, where: str, i: int, what: str, types: tuple[str, ...]) -> tuple[TfTensor, np.ndarray]:
        t = self.t[i]
        if t.data is None:
            raise UnsupportedOpError(f"{where}: the {what} '{t.name}' is not a constant")
        if t.type not in types:
            raise UnsupportedOpError(f"{where}: {t.type} {what} are not supported ({'/'.join(types)} only)")
        return t, t.array()

    def quant(self, where: str, t: TfTensor) -> tuple[float, int]:
        if t.scale is None or t.zero_point is None or t.scale.size != 1:
            raise UnsupportedOpError(f"{where}: tensor '{t.name}' is not quantized per tensor; edgekit imports "
                                     "int8 models with quantized activations (full-integer quantization)")
        return float(t.scale[0]), int(t.zero_point[0])

    def out_tensor(self, where: str, i: int, shape=None) -> Tensor:
        t = self.t[i]
        if t.type != "INT8":
            raise UnsupportedOpError(f"{where}: {t.type} output '{t.name}'; edgekit imports int8 models")
        s, z = self.quant(where, t)
        shape = tuple(shape) if shape is not None else t.per_sample_shape
        return Tensor(self.ir_tensor_name(t), shape, "int8", 8, True, [s], z, INT8_MIN, INT8_MAX)

    def emit(self, name: str, op: str, inputs: list[str], out: Tensor, out_index: int, **attrs) -> None:
        self.tensors[out.name] = out
        self.nodes.append(Node(name, op, inputs, [out.name], attrs))
        self.ir_name[out_index] = out.name

    def add_const(self, name: str, arr: np.ndarray, dtype: str, bits: int, scale) -> str:
        lo, hi = contract.quant_range(bits, True, False)
        self.tensors[name] = Tensor(name, tuple(arr.shape), dtype, bits, True,
                                    [float(s) for s in np.ravel(scale)], 0, lo, hi, const=True)
        self.constants[name] = np.asarray(arr).astype(np.dtype(dtype))
        return name

    def int_value(self, where: str, i: int, what: str) -> np.ndarray:
        """An integer value known at import time: a constant or folded shape arithmetic."""
        if i in self.folded:
            return self.folded[i]
        t = self.t[i]
        if t.data is not None and t.type in ("INT32", "INT64"):
            v = t.array().astype(np.int64)
            return v.reshape(()) if not t.shape and v.size == 1 else v  # a scalar
        raise UnsupportedOpError(f"{where}: the {what} '{t.name}' is not an int32 value known at import time "
                                 "(edgekit evaluates shape arithmetic on static shapes only)")

    def fold(self, where: str, op, value: np.ndarray) -> None:
        oidx = int(op.OutputsAsNumpy()[0])
        t = self.t[oidx]
        if t.type not in ("INT32", "INT64"):
            raise UnsupportedOpError(f"{where}: {t.type} output; edgekit evaluates only int32 shape arithmetic")
        if t.shape and tuple(value.shape) != t.shape:
            raise ModelError(f"{where}: computes shape {list(value.shape)} but its output '{t.name}' is "
                             f"{list(t.shape)}")
        self.folded[oidx] = value.astype(np.int64)

    def activation(self, where: str, opts, out: Tensor) -> tuple[int, int]:
        act = self.act_names.get(opts.FusedActivationFunction(), "?")
        return activation_range(act, out.scale[0], out.zero_point, where)

    # -- driver ---------------------------------------------------------------------
    def run(self) -> Graph:
        sub = self.sub
        ins, outs = list(sub.InputsAsNumpy()), list(sub.OutputsAsNumpy())
        if len(ins) != 1 or len(outs) != 1:
            raise UnsupportedOpError(f"{self.source}: models with {len(ins)} inputs and {len(outs)} outputs are "
                                     "not supported (one of each)")
        ops = [sub.Operators(k) for k in range(sub.OperatorsLength())]
        names = [self.op_name(op) for op in ops]
        # A float interface (the converter's default without inference_input_type=tf.int8): a
        # float input quantized by one QUANTIZE, a float output from one DEQUANTIZE. The int8
        # model between them is imported; the QUANTIZE becomes the host-side input quantizer
        # (TFLite's rounding) and the DEQUANTIZE is EK_OUTPUT_SCALE / EK_OUTPUT_ZERO_POINT.
        in_idx, out_idx, boundary = int(ins[0]), int(outs[0]), set()
        if self.t[in_idx].type == "FLOAT32":
            users = [k for k, op in enumerate(ops) if in_idx in _inputs(op)]
            if not (len(users) == 1 and names[users[0]] == "QUANTIZE"
                    and self.t[int(ops[users[0]].OutputsAsNumpy()[0])].type == "INT8"):
                raise UnsupportedOpError(
                    f"{self.source}: the model input '{self.t[in_idx].name}' is FLOAT32 and feeds "
                    f"{', '.join(f'operator {k} ({names[k]})' for k in users) or 'nothing'}; edgekit imports "
                    "full-integer models: an int8 input, or a float input whose only use is one QUANTIZE to int8 "
                    "(convert with a representative dataset and TFLITE_BUILTINS_INT8)")
            boundary.add(users[0])
            in_idx = int(ops[users[0]].OutputsAsNumpy()[0])
        if self.t[out_idx].type == "FLOAT32":
            prod = [k for k, op in enumerate(ops) if out_idx in [int(o) for o in op.OutputsAsNumpy()]]
            if not (len(prod) == 1 and names[prod[0]] == "DEQUANTIZE"
                    and self.t[_inputs(ops[prod[0]])[0]].type == "INT8"):
                raise UnsupportedOpError(
                    f"{self.source}: the model output '{self.t[out_idx].name}' is FLOAT32 and comes from "
                    f"{', '.join(f'operator {k} ({names[k]})' for k in prod) or 'no operator'}; edgekit imports "
                    "full-integer models: an int8 output, or a float output made by one DEQUANTIZE of an int8 tensor")
            boundary.add(prod[0])
            out_idx = _inputs(ops[prod[0]])[0]
        bad = [f"operator {k} ({n})" for k, n in enumerate(names) if n not in LOWERINGS and k not in boundary]
        if bad:
            raise UnsupportedOpError(f"{self.source}: unsupported operator(s) {', '.join(bad)}; edgekit imports "
                                     f"{', '.join(sorted(LOWERINGS))} (and a float interface: QUANTIZE at the input, "
                                     "DEQUANTIZE at the output)")
        x = self.t[in_idx]
        if x.type != "INT8":
            raise UnsupportedOpError(f"{self.source}: the model input '{x.name}' is {x.type}; edgekit imports "
                                     "full-integer models with an int8 input and output (convert with "
                                     "inference_input_type=tf.int8, inference_output_type=tf.int8)")
        if not x.shape or x.shape[0] != 1:
            raise UnsupportedOpError(f"{self.source}: input shape {list(x.shape)}; edgekit expects batch 1")
        s, z = self.quant(f"{self.source}: the model input", x)
        inp = Tensor(self.ir_tensor_name(x), x.per_sample_shape, "int8", 8, True, [s], z, INT8_MIN, INT8_MAX)
        self.tensors[inp.name] = inp
        self.ir_name[in_idx] = inp.name
        for k, (op, name) in enumerate(zip(ops, names)):
            if k in boundary:
                continue
            where = f"{self.source}: operator {k} ({name})"
            if op.OutputsLength() != 1:
                raise UnsupportedOpError(f"{where}: {op.OutputsLength()} outputs")
            LOWERINGS[name](self, op, f"{name.lower()}_{k}", where)
        y = self.t[out_idx]
        if out_idx not in self.ir_name:
            raise UnsupportedOpError(f"{self.source}: the model output '{y.name}' is not computed by an operator")
        if y.type != "INT8":
            raise UnsupportedOpError(f"{self.source}: the model output '{y.name}' is {y.type}; edgekit imports "
                                     "full-integer models with an int8 output")
        out_name = self.ir_name[out_idx]
        root = out_name
        while True:  # reshapes alias their input: follow them back
            prod = next((n for n in self.nodes if root in n.outputs), None)
            if prod is None or prod.op != "reshape":
                break
            root = prod.inputs[0]
        if root == inp.name:
            raise UnsupportedOpError(f"{self.source}: the model output is its input (reshaped at most)")
        iq = InputQuant(x.per_sample_shape, s, z, INT8_MIN, INT8_MAX, 8, True, [], rounding="tflite")
        return Graph(self.tensors, self.nodes, [inp.name], [out_name], self.constants, iq,
                     meta={"source": self.source, "frontend": "tflite", "qonnx_float_exact": False, "inexact": [],
                           "output_tflite_shape": list(y.shape), "input_tflite_shape": list(x.shape),
                           "float_interface": {"input": int(ins[0]) != in_idx, "output": int(outs[0]) != out_idx}})


LOWERINGS: dict[str, Callable] = {}


def lowering(*names: str):
    def deco(fn):
        for n in names:
            LOWERINGS[n] = fn
        return fn
    return deco


def _inputs(op) -> list[int]:
    return [int(i) for i in op.InputsAsNumpy()]


def _bias(lw: TfliteLowerer, where: str, ins: list[int], n_out: int) -> np.ndarray:
    if len(ins) < 3 or ins[2] < 0:
        return np.zeros(n_out, np.int64)
    _, b = lw.const(where, ins[2], "bias", ("INT32",))
    if b.size != n_out:
        raise UnsupportedOpError(f"{where}: bias of {b.size} values for {n_out} outputs")
    return b.astype(np.int64).ravel()


def _weights(lw: TfliteLowerer, where: str, i: int, n_out: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = lw.const(where, i, "weights", ("INT8",))
    if t.scale is None or t.scale.size not in (1, n_out):
        raise UnsupportedOpError(f"{where}: weights '{t.name}' are not quantized per tensor or per output channel")
    if t.scale.size > 1 and t.quantized_dimension != channel_axis % w.ndim:
        raise UnsupportedOpError(f"{where}: weights quantized along axis {t.quantized_dimension}, expected the "
                                 "output channel axis")
    if t.zero_point is not None and np.any(t.zero_point != 0):
        raise UnsupportedOpError(f"{where}: asymmetric weights (zero point != 0) are not supported")
    return w, t.scale


def _conv_requant(lw, where, x: Tensor, w_scale: np.ndarray, out: Tensor, lo: int, hi: int, n_out: int):
    """PopulateConvolutionQuantizationParams: double(in) * double(w_c) / double(out), per channel."""
    ws = np.resize(w_scale.astype(np.float64), n_out)
    ratios = np.float64(np.float32(x.scale[0])) * ws / np.float64(np.float32(out.scale[0]))
    try:
        return contract.tflite_requant(ratios, out.zero_point, lo, hi)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None


def _check_acc(where: str, x: Tensor, per_out_abs: np.ndarray, bias: np.ndarray) -> None:
    xmax = max(abs(x.qmin - x.zero_point), abs(x.qmax - x.zero_point))
    contract.check_accumulator(where, np.abs(bias) + per_out_abs * xmax)


@lowering("CONV_2D", "DEPTHWISE_CONV_2D")
def lower_conv(lw: TfliteLowerer, op, name: str, where: str) -> None:
    tfl = lw.tfl
    depthwise = lw.op_name(op) == "DEPTHWISE_CONV_2D"
    o = lw.options(op, tfl.DepthwiseConv2DOptions if depthwise else tfl.Conv2DOptions, where)
    ins = _inputs(op)
    x = lw.act(where, ins[0])
    if len(x.shape) != 3:
        raise UnsupportedOpError(f"{where}: input of shape {list(x.shape)}; expected N x H x W x C")
    ih, iw, ic = x.shape
    oidx = int(op.OutputsAsNumpy()[0])
    if depthwise:
        w, w_scale = _weights(lw, where, ins[1], lw.t[ins[1]].shape[-1], 3)
        if w.ndim != 4 or w.shape[0] != 1:
            raise UnsupportedOpError(f"{where}: depthwise weights of shape {list(w.shape)}")
        _, kh, kw, oc = w.shape
        mult = o.DepthMultiplier() if o is not None else 1
        if oc != ic * mult:
            raise UnsupportedOpError(f"{where}: {oc} output channels from {ic} input channels with depth "
                                     f"multiplier {mult}")
        wts = w[0]  # [KH, KW, OC]
        per_out = np.abs(wts.astype(np.int64)).reshape(-1, oc).sum(axis=0)
    else:
        w, w_scale = _weights(lw, where, ins[1], lw.t[ins[1]].shape[0], 0)
        if w.ndim != 4:
            raise UnsupportedOpError(f"{where}: weights of shape {list(w.shape)}")
        oc, kh, kw, wic = w.shape
        if wic != ic:
            raise UnsupportedOpError(f"{where}: grouped convolution ({ic} input channels, filters of depth {wic}) "
                                     "is not supported")
        wts = w  # [O, KH, KW, I]: the IR layout
        per_out = np.abs(wts.astype(np.int64)).reshape(oc, -1).sum(axis=1)
        mult = 1
    pad = lw.pad_names.get(o.Padding(), "?")
    sh, sw = o.StrideH(), o.StrideW()
    dh, dw = o.DilationHFactor() or 1, o.DilationWFactor() or 1
    oh, pad_t, pad_b = same_or_valid(pad, ih, kh, sh, dh, where)
    ow, pad_l, pad_r = same_or_valid(pad, iw, kw, sw, dw, where)
    out = lw.out_tensor(where, oidx)
    if out.shape != (oh, ow, oc):
        raise ModelError(f"{where}: output shape {list(out.shape)} disagrees with the computed {[oh, ow, oc]}")
    bias = _bias(lw, where, ins, oc)
    _check_acc(where, x, per_out, bias)
    lo, hi = lw.activation(where, o, out)
    rq = _conv_requant(lw, where, x, w_scale, out, lo, hi, oc)
    wname = lw.add_const(f"{name}_weight", wts, "int8", 8, w_scale)
    bname = lw.add_const(f"{name}_bias", bias, "int32", 32, np.float64(x.scale[0]) * np.resize(w_scale, oc))
    lw.emit(name, "conv2d", [x.name, wname, bname], out, oidx, requant=rq, kernel=[kh, kw], stride=[sh, sw],
            dilation=[dh, dw], pad=[pad_t, pad_l, pad_b, pad_r], depthwise=depthwise, depth_multiplier=mult)


@lowering("FULLY_CONNECTED")
def lower_fully_connected(lw: TfliteLowerer, op, name: str, where: str) -> None:
    o = lw.options(op, lw.tfl.FullyConnectedOptions)
    if o is not None and o.WeightsFormat() != 0:
        raise UnsupportedOpError(f"{where}: shuffled weights format is not supported")
    ins = _inputs(op)
    x = lw.act(where, ins[0])
    w, w_scale = _weights(lw, where, ins[1], lw.t[ins[1]].shape[0], 0)
    if w.ndim != 2:
        raise UnsupportedOpError(f"{where}: weights of shape {list(w.shape)}")
    n_out, n_in = w.shape
    if x.size != n_in:
        raise UnsupportedOpError(f"{where}: input of {x.size} values per sample for {n_in} input features "
                                 "(fully connected over several rows is not supported)")
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.size != n_out:
        raise ModelError(f"{where}: output shape {list(out.shape)} for {n_out} outputs")
    bias = _bias(lw, where, ins, n_out)
    codes = w.astype(np.int64)
    folded = bias - x.zero_point * codes.sum(axis=1)  # the kernel multiplies raw codes
    contract.check_accumulator(where, contract.accumulator_bound(codes, folded, x.qmin, x.qmax))
    _check_acc(where, x, np.abs(codes).sum(axis=1), bias)
    lo, hi = lw.activation(where, o, out) if o is not None else (INT8_MIN, INT8_MAX)
    if w_scale.size > 1:  # per-channel: like convolutions
        rq = _conv_requant(lw, where, x, w_scale, out, lo, hi, n_out)
    else:  # GetQuantizedConvolutionMultipler: the scale product in float32
        ratio = np.float64(np.float32(x.scale[0]) * np.float32(w_scale[0])) / np.float64(np.float32(out.scale[0]))
        try:
            rq = contract.tflite_requant(np.array([ratio]), out.zero_point, lo, hi)
        except ValueError as e:
            raise UnsupportedOpError(f"{where}: {e}") from None
    wname = lw.add_const(f"{name}_weight", w, "int8", 8, w_scale)
    bname = lw.add_const(f"{name}_bias", folded, "int32", 32, np.float64(x.scale[0]) * np.resize(w_scale, n_out))
    lw.emit(name, "dense", [x.name, wname, bname], out, oidx, requant=rq)


def _pool_window(lw, op, where: str, x: Tensor):
    o = lw.options(op, lw.tfl.Pool2DOptions, where)
    if len(x.shape) != 3:
        raise UnsupportedOpError(f"{where}: input of shape {list(x.shape)}; expected N x H x W x C")
    ih, iw, c = x.shape
    kh, kw, sh, sw = o.FilterHeight(), o.FilterWidth(), o.StrideH(), o.StrideW()
    pad = lw.pad_names.get(o.Padding(), "?")
    oh, pad_t, pad_b = same_or_valid(pad, ih, kh, sh, 1, where)
    ow, pad_l, pad_r = same_or_valid(pad, iw, kw, sw, 1, where)
    return o, [kh, kw], [sh, sw], [pad_t, pad_l, pad_b, pad_r], (oh, ow, c)


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D")
def lower_pool(lw: TfliteLowerer, op, name: str, where: str) -> None:
    x = lw.act(where, _inputs(op)[0])
    o, k, stride, pad, shape = _pool_window(lw, op, where, x)
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.shape != shape:
        raise ModelError(f"{where}: output shape {list(out.shape)} disagrees with the computed {list(shape)}")
    if abs(np.float32(x.scale[0]) - np.float32(out.scale[0])) > 1e-6 or x.zero_point != out.zero_point:
        raise UnsupportedOpError(f"{where}: input and output quantization differ (TFLite requires them equal)")
    lo, hi = lw.activation(where, o, out)
    if lw.op_name(op) == "MAX_POOL_2D":
        clamp = {} if (lo, hi) == (INT8_MIN, INT8_MAX) else {"lo": lo, "hi": hi}
        lw.emit(name, "maxpool", [x.name], out, oidx, kernel=k, stride=stride, pad=pad, **clamp)
        return
    # TFLite: the codes themselves summed over the taps inside the input, divided by their
    # count, rounded half away from zero, clamped to the activation range.
    lw.emit(name, "avgpool", [x.name], out, oidx, kernel=k, stride=stride, pad=pad, num=1, den=k[0] * k[1],
            mode="AWAY", requant=None, zero_point=0, lo=lo, hi=hi, raw_sum=True, count_include_pad=False)


@lowering("ADD")
def lower_add(lw: TfliteLowerer, op, name: str, where: str) -> None:
    ins = _inputs(op)
    if len(ins) != 2:
        raise UnsupportedOpError(f"{where}: {len(ins)} inputs")
    a, b = lw.act(where, ins[0]), lw.act(where, ins[1])
    if a.shape != b.shape:
        raise UnsupportedOpError(f"{where}: broadcasting add {list(a.shape)} + {list(b.shape)} is not supported")
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.shape != a.shape:
        raise ModelError(f"{where}: output shape {list(out.shape)} for inputs {list(a.shape)}")
    lo, hi = lw.activation(where, lw.options(op, lw.tfl.AddOptions), out)
    # CalculateOpDataAdd (int8): inputs shifted left by 20 bits, rescaled to twice the larger scale
    sa, sb, so = (np.float32(t.scale[0]) for t in (a, b, out))
    twice_max = 2 * np.float64(max(sa, sb))
    r_a, r_b = np.float64(sa) / twice_max, np.float64(sb) / twice_max
    r_out = twice_max / ((1 << 20) * np.float64(so))
    if not 0 < r_out < 1:
        raise UnsupportedOpError(f"{where}: output scale {float(so):.6g} is too small for TFLite's int8 add")
    rq_in = [contract.tflite_requant(np.array([r]), 0, contract.INT32_MIN, contract.INT32_MAX, left_shift=20)
             for r in (r_a, r_b)]
    rq = contract.tflite_requant(np.array([r_out]), out.zero_point, lo, hi)
    lw.emit(name, "add", [a.name, b.name], out, oidx, requant=rq, in_requant=rq_in)


@lowering("RESHAPE", "SQUEEZE")
def lower_reshape(lw: TfliteLowerer, op, name: str, where: str) -> None:
    x = lw.act(where, _inputs(op)[0])
    oidx = int(op.OutputsAsNumpy()[0])
    y = lw.t[oidx]
    if not y.shape or y.shape[0] != 1:
        raise UnsupportedOpError(f"{where}: output shape {list(y.shape)}; edgekit expects batch 1")
    out = lw.out_tensor(where, oidx)
    if out.size != x.size:
        raise ModelError(f"{where}: reshape of {x.size} values into {list(y.shape)}")
    ins = _inputs(op)
    if len(ins) > 1 and ins[1] >= 0:  # the new shape, a constant or import-time shape arithmetic
        want = lw.int_value(where, ins[1], "new shape").ravel()
        known = int(np.prod([d for d in want if d != -1]))
        ok = (len(want) == len(y.shape) and (want == -1).sum() <= 1 and known > 0 and
              all(d in (-1, e) for d, e in zip(want.tolist(), y.shape)))
        if not ok:
            raise ModelError(f"{where}: new shape {want.tolist()} does not match the output tensor's shape "
                             f"{list(y.shape)}")
    if (out.scale, out.zero_point) != (x.scale, x.zero_point):
        raise UnsupportedOpError(f"{where}: reshape that changes the quantization is not supported")
    lw.emit(name, "reshape", [x.name], out, oidx)


# Shape arithmetic. Keras 3's Flatten exports ``RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x)), -1))``
# so that the batch size stays dynamic. edgekit's shapes are static (batch 1), so these int32
# operators are evaluated once here; nothing of them reaches the IR or the firmware.
@lowering("SHAPE")
def fold_shape(lw: TfliteLowerer, op, name: str, where: str) -> None:
    i = _inputs(op)[0]
    lw.fold(where, op, np.array(lw.t[i].shape, np.int64))


@lowering("STRIDED_SLICE")
def fold_strided_slice(lw: TfliteLowerer, op, name: str, where: str) -> None:
    ins = _inputs(op)
    if len(ins) != 4:
        raise UnsupportedOpError(f"{where}: {len(ins)} inputs (expected input, begin, end, strides)")
    x = lw.int_value(where, ins[0], "input")
    begin, end, strides = (lw.int_value(where, i, what).ravel()
                           for i, what in zip(ins[1:], ("begin", "end", "strides")))
    o = lw.options(op, lw.tfl.StridedSliceOptions)
    masks = (o.BeginMask(), o.EndMask(), o.ShrinkAxisMask(), o.EllipsisMask(), o.NewAxisMask()) if o else (0,) * 5
    if masks[3] or masks[4]:
        raise UnsupportedOpError(f"{where}: ellipsis and new-axis masks are not supported")
    if not (len(begin) == len(end) == len(strides) <= x.ndim) or np.any(strides == 0):
        raise ModelError(f"{where}: begin {begin.tolist()}, end {end.tolist()}, strides {strides.tolist()} do not "
                         f"fit an input of {x.ndim} dimensions")
    index = []
    for d in range(len(begin)):
        if masks[2] >> d & 1:
            index.append(int(begin[d]))
        else:
            index.append(slice(None if masks[0] >> d & 1 else int(begin[d]),
                               None if masks[1] >> d & 1 else int(end[d]), int(strides[d])))
    lw.fold(where, op, np.asarray(x[tuple(index)]))


@lowering("PACK")
def fold_pack(lw: TfliteLowerer, op, name: str, where: str) -> None:
    o = lw.options(op, lw.tfl.PackOptions)
    parts = [lw.int_value(where, i, f"value {k}") for k, i in enumerate(_inputs(op))]
    if len({p.shape for p in parts}) != 1:
        raise ModelError(f"{where}: values of different shapes {[list(p.shape) for p in parts]}")
    axis = o.Axis() if o is not None else 0
    if not -parts[0].ndim - 1 <= axis <= parts[0].ndim:
        raise ModelError(f"{where}: axis {axis} out of range")
    lw.fold(where, op, np.stack(parts, axis=axis))


@lowering("MEAN")
def lower_mean(lw: TfliteLowerer, op, name: str, where: str) -> None:
    """MEAN over the spatial axes (Keras' GlobalAveragePooling) as TFLite Micro computes it
    (reference_ops::QuantizedMeanOrSum): ``sum - zp_in * n``, then MultiplyByQuantizedMultiplier
    with ``M' = (M << k) / n`` and the shift lowered by ``k = min(floor(log2 n), 32, 31 + shift)``,
    where (M, shift) = QuantizeMultiplier(s_in / s_out); + zp_out, clamp. That is a depthwise
    convolution over the reduced window with weights 1 and bias 0 (x - zp per tap) and a
    double-rounding Requant (M', S + k): the IR, simulator and kernels need nothing new."""
    ins = _inputs(op)
    x = lw.act(where, ins[0])
    nd = len(lw.t[ins[0]].shape)
    axes = sorted({int(a) % nd for a in np.atleast_1d(lw.int_value(where, ins[1], "axis")).ravel()}) if nd else []
    if nd not in (3, 4) or not axes or 0 in axes or nd - 1 in axes:
        raise UnsupportedOpError(f"{where}: mean over axes {axes} of a {nd}-D tensor; edgekit imports the mean "
                                 "over spatial axes (global average pooling) of N x H x W x C or N x L x C tensors")
    o = lw.options(op, lw.tfl.ReducerOptions)
    keep = bool(o.KeepDims()) if o is not None else False
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    src = x
    if nd == 3:  # N x L x C: a 1 x L x C map
        src = Tensor(f"{x.name}_map", (1,) + tuple(x.shape), x.dtype, x.bits, x.signed, x.scale, x.zero_point,
                     x.qmin, x.qmax)
        lw.tensors[src.name] = src
        lw.nodes.append(Node(f"{name}_in", "reshape", [x.name], [src.name], {}))
        axes = [a + 1 for a in axes]
    h, w, c = src.shape
    kh, kw = (h if 1 in axes else 1), (w if 2 in axes else 1)
    n = kh * kw
    ratio = np.float64(np.float32(x.scale[0])) / np.float64(np.float32(out.scale[0]))
    try:
        m, s = contract.quantize_multiplier_tflite(float(ratio))
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    k = min(n.bit_length() - 1, 32, 31 + (31 - s))
    if k < 0:
        raise UnsupportedOpError(f"{where}: scale ratio {ratio:.3g} is too small for TFLite's mean")
    rq = contract.Requant(((m << k) // n,), (s + k,), out.zero_point, INT8_MIN, INT8_MAX, False, "double", 0)
    shape = (h // kh, w // kw, c)
    y = out if tuple(out.shape) == shape else Tensor(f"{out.name}_map", shape, out.dtype, out.bits, out.signed,
                                                      out.scale, out.zero_point, out.qmin, out.qmax)
    if y.size != out.size:
        raise ModelError(f"{where}: output shape {list(lw.t[oidx].shape)} for a mean over axes {axes} "
                         f"(keep_dims {keep}) of {list(lw.t[ins[0]].shape)}")
    wname = lw.add_const(f"{name}_ones", np.ones((kh, kw, c), np.int64), "int8", 8, [1.0])
    bname = lw.add_const(f"{name}_zero", np.zeros(c, np.int64), "int32", 32, [float(x.scale[0])])
    attrs = dict(requant=rq, kernel=[kh, kw], stride=[1, 1], dilation=[1, 1], pad=[0, 0, 0, 0], depthwise=True,
                 depth_multiplier=1)
    if y is out:
        lw.emit(name, "conv2d", [src.name, wname, bname], out, oidx, **attrs)
    else:
        lw.tensors[y.name] = y
        lw.nodes.append(Node(name, "conv2d", [src.name, wname, bname], [y.name], attrs))
        lw.emit(f"{name}_out", "reshape", [y.name], out, oidx)


@lowering("QUANTIZE")
def lower_quantize(lw: TfliteLowerer, op, name: str, where: str) -> None:
    """int8 -> int8 requantization (TFLite Micro's Requantize): double(s_in) / double(s_out)."""
    i = _inputs(op)[0]
    if lw.t[i].type != "INT8":
        raise UnsupportedOpError(f"{where}: quantizing a {lw.t[i].type} tensor; edgekit imports full-integer "
                                 "models (int8 input and output: inference_input_type=tf.int8)")
    x = lw.act(where, i)
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    ratio = np.float64(np.float32(x.scale[0])) / np.float64(np.float32(out.scale[0]))
    try:
        rq = contract.tflite_requant(np.array([ratio]), out.zero_point, INT8_MIN, INT8_MAX)
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    lw.emit(name, "requantize", [x.name], out, oidx, requant=rq)


@lowering("SOFTMAX")
def lower_softmax(lw: TfliteLowerer, op, name: str, where: str) -> None:
    x = lw.act(where, _inputs(op)[0])
    oidx = int(op.OutputsAsNumpy()[0])
    out = lw.out_tensor(where, oidx)
    if out.zero_point != -128 or np.float32(out.scale[0]) != np.float32(1 / 256):
        raise UnsupportedOpError(f"{where}: int8 softmax output must have scale 1/256 and zero point -128 "
                                 f"(TFLite's requirement), not {out.scale[0]:.6g} and {out.zero_point}")
    depth = x.shape[-1] if x.shape else 1
    if depth * (1 << 19) >= 2**31:
        raise ContractError(f"{where}: softmax over {depth} values overflows TFLite's Q12.19 sum")
    o = lw.options(op, lw.tfl.SoftmaxOptions)
    beta = o.Beta() if o is not None else 1.0
    try:
        table = softmax_exp_table(beta, x.scale[0])
    except ValueError as e:
        raise UnsupportedOpError(f"{where}: {e}") from None
    tname = lw.add_const(f"{name}_exp", table, "int32", 32, [2.0**-31])
    lw.emit(name, "softmax_tflite", [x.name, tname], out, oidx, beta=float(beta))


def import_tflite(path: str | Path) -> tuple[Graph, bytes]:
    """Read and lower an int8 .tflite file; returns the IR graph and the file's bytes."""
    raw, model = load_tflite(path)
    graph = TfliteLowerer(raw, model, str(path)).run()
    graph.meta["source_sha256"] = hashlib.sha256(raw).hexdigest()
    return graph, raw
