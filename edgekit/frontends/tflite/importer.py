"""The model-level TFLite import: interface checks, the operator walk, the IR graph.

Every operator goes to its lowering function in ``registry.LOWERINGS`` (the modules in
``ops/``); a float interface (QUANTIZE in, DEQUANTIZE out) becomes the host-side input
quantizer and the output scale.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from ...errors import ModelError, UnsupportedOpError
from ...ir import contract
from ...ir.graph import Graph, InputQuant, Node, Tensor
from .operands import op_inputs
from .params import INT8_MAX, INT8_MIN, activation_range
from .reader import TfTensor, enum_names, load_tflite, schema
from .registry import load_lowerings


class TfliteLowerer:
    def __init__(self, raw: bytes, model, source: str):
        tfl = schema()
        self.tfl = tfl
        self.model = model
        self.source = source
        self.sub = model.Subgraphs(0)
        self.op_names = enum_names(tfl.BuiltinOperator)
        self.act_names = enum_names(tfl.ActivationFunctionType)
        self.pad_names = enum_names(tfl.Padding)
        type_names = enum_names(tfl.TensorType)
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
        lowerings = load_lowerings()
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
            users = [k for k, op in enumerate(ops) if in_idx in op_inputs(op)]
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
                    and self.t[op_inputs(ops[prod[0]])[0]].type == "INT8"):
                raise UnsupportedOpError(
                    f"{self.source}: the model output '{self.t[out_idx].name}' is FLOAT32 and comes from "
                    f"{', '.join(f'operator {k} ({names[k]})' for k in prod) or 'no operator'}; edgekit imports "
                    "full-integer models: an int8 output, or a float output made by one DEQUANTIZE of an int8 tensor")
            boundary.add(prod[0])
            out_idx = op_inputs(ops[prod[0]])[0]
        bad = [f"operator {k} ({n})" for k, n in enumerate(names) if n not in lowerings and k not in boundary]
        if bad:
            raise UnsupportedOpError(f"{self.source}: unsupported operator(s) {', '.join(bad)}; edgekit imports "
                                     f"{', '.join(sorted(lowerings))} (and a float interface: QUANTIZE at the input, "
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
            lowerings[name](self, op, f"{name.lower()}_{k}", where)
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


def import_tflite(path: str | Path) -> tuple[Graph, bytes]:
    """Read and lower an int8 .tflite file; returns the IR graph and the file's bytes."""
    raw, model = load_tflite(path)
    try:
        graph = TfliteLowerer(raw, model, str(path)).run()
    except struct.error as e:  # a field read past the end of the buffer: the reader's checks are per table
        raise ModelError(f"{path}: corrupt TFLite flatbuffer ({e}); convert it again") from None
    graph.meta["source_sha256"] = hashlib.sha256(raw).hexdigest()
    return graph, raw
