"""Write small int8 .tflite flatbuffers with the `tflite` package's generated builders: the
tests' synthetic models and ``edgekit fuzz``'s random graphs.

Only what those need: one subgraph, tensors with per-tensor or per-channel affine
quantization, constant buffers, builtin operators with their options tables.
"""
from __future__ import annotations

import importlib

import flatbuffers
import numpy as np
import tflite

TYPES = {"int8": tflite.TensorType.INT8, "int32": tflite.TensorType.INT32, "float32": tflite.TensorType.FLOAT32}


def _module(name: str):
    return importlib.import_module(f"tflite.{name}")


def _bytes(b: flatbuffers.Builder, data: bytes, align: int = 16) -> int:
    b.StartVector(1, len(data), align)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _table_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


class TfliteBuilder:
    """Tensors, constant buffers and operators of one subgraph, serialised by :meth:`build`."""

    def __init__(self, description: str = "edgekit synthetic model"):
        self.description = description
        self.tensors: list[dict] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty buffer
        self.ops: list[tuple] = []
        self.codes: list[int] = []

    def tensor(self, shape, dtype="int8", scale=None, zero_point=None, data=None, qdim=0, name=None) -> int:
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(np.asarray(data, dtype=dtype)).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append(dict(shape=list(shape), dtype=dtype, buffer=buf, qdim=qdim,
                                 scale=None if scale is None else np.atleast_1d(np.asarray(scale, np.float32)),
                                 zp=None if zero_point is None else np.atleast_1d(np.asarray(zero_point, np.int64)),
                                 name=name or f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def act(self, shape, scale, zero_point) -> int:
        return self.tensor(shape, "int8", scale, zero_point)

    def op(self, name: str, inputs: list[int], outputs: list[int], options: str | None = None, **fields) -> None:
        code = getattr(tflite.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, options, fields))

    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = []
        for data in self.buffers:
            vec = _bytes(b, data) if data else None
            B = _module("Buffer")
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
                Q = _module("QuantizationParameters")
                Q.Start(b)
                Q.AddScale(b, scale)
                Q.AddZeroPoint(b, zp)
                Q.AddQuantizedDimension(b, t["qdim"])
                q = Q.End(b)
            T = _module("Tensor")
            T.Start(b)
            T.AddShape(b, shape)
            T.AddType(b, TYPES[t["dtype"]])
            T.AddBuffer(b, t["buffer"])
            T.AddName(b, name)
            if q is not None:
                T.AddQuantization(b, q)
            tensors.append(T.End(b))
        ops = []
        for opcode, ins, outs, options, fields in self.ops:
            opt = None
            if options is not None:
                O = _module(options)
                # vector fields (e.g. SqueezeDims) must be built before the table starts
                fields = {k: b.CreateNumpyVector(np.asarray(v, np.int32)) if isinstance(v, (list, tuple)) else v
                          for k, v in fields.items()}
                O.Start(b)
                for k, v in fields.items():
                    getattr(O, f"Add{k}")(b, v)
                opt = O.End(b)
            iv = b.CreateNumpyVector(np.asarray(ins, np.int32))
            ov = b.CreateNumpyVector(np.asarray(outs, np.int32))
            P = _module("Operator")
            P.Start(b)
            P.AddOpcodeIndex(b, opcode)
            P.AddInputs(b, iv)
            P.AddOutputs(b, ov)
            if opt is not None:
                P.AddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, options))
                P.AddBuiltinOptions(b, opt)
            ops.append(P.End(b))
        S = _module("SubGraph")
        tv, opv = _table_vector(b, tensors), _table_vector(b, ops)
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
            C = _module("OperatorCode")
            C.Start(b)
            C.AddDeprecatedBuiltinCode(b, min(c, 127))
            C.AddBuiltinCode(b, c)
            C.AddVersion(b, 1)
            codes.append(C.End(b))
        cv, sv, bv = _table_vector(b, codes), _table_vector(b, [sub]), _table_vector(b, buffers)
        desc = b.CreateString(self.description)
        M = _module("Model")
        M.Start(b)
        M.AddVersion(b, 3)
        M.AddOperatorCodes(b, cv)
        M.AddSubgraphs(b, sv)
        M.AddDescription(b, desc)
        M.AddBuffers(b, bv)
        b.Finish(M.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())
