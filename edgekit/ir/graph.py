"""edgekit's integer IR: typed integer tensors and a topologically ordered list of nodes.

Shapes are per sample (no batch dimension). Every tensor carries its quantization
(``scale`` and ``zero_point`` give its real value) so that any stage can be compared
with the float reference, but the nodes themselves only do integer arithmetic.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BuildDirError

IR_VERSION = 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # storage type: int8, uint8, int16, uint16, int32
    bits: int
    signed: bool
    scale: list[float]  # one entry, or one per channel (last axis)
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 0
    const: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize


@dataclass
class Node:
    name: str  # the source node's name, so errors and reports point at the user's graph
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)  # exactly the op's declared attributes (ir/operators.py)

    def __post_init__(self):
        from .operators import check_node

        check_node(self)


@dataclass
class InputQuant:
    """The model's input quantizer: run on the host to turn float samples into codes."""

    float_shape: tuple[int, ...]  # the model's input layout, per sample
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    bits: int
    signed: bool
    # Float-domain steps between the graph input and its quantizer, replayed on the host:
    # ("reshape", shape), ("transpose", perm), ("to_channels_last", chw_shape), per sample;
    # ("mul" | "div" | "add" | "sub", constant), elementwise in float32 (FLOAT_STEPS).
    pre_ops: list = field(default_factory=list)
    # The graph has no input quantizer: this one is derived from the input's datatype
    # annotation (e.g. "BIPOLAR"); qonnx is then run on the grid points only.
    annotation: str = ""
    # "qonnx": QONNX Quant (x / s + zp, clamp, round half to even); "tflite": TFLite's QUANTIZE
    # (round half away from zero of x / s, then + zp, clamp). contract.quantize / quantize_tflite.
    rounding: str = "qonnx"


FLOAT_STEPS = {"mul": np.multiply, "div": np.divide, "add": np.add, "sub": np.subtract}
INVERSE_STEPS = {"mul": np.divide, "div": np.multiply, "add": np.subtract, "sub": np.add}


def apply_float_steps(y: np.ndarray, steps) -> np.ndarray:
    """Elementwise float arithmetic by constants in float32, as qonnx (onnxruntime) computes it;
    each constant broadcasts numpy-style over (N, ...)."""
    y = np.asarray(y, np.float32)
    for step, c in steps:
        y = FLOAT_STEPS[step](y, np.asarray(c, np.float32)).astype(np.float32)
    return y


def apply_pre_ops(iq, x: np.ndarray) -> np.ndarray:
    """The input quantizer's float steps (layout and elementwise) on float samples."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(iq.float_shape):
        x = x.reshape((x.shape[0],) + tuple(iq.float_shape))
    for op, arg in iq.pre_ops:
        if op == "reshape":
            x = x.reshape((x.shape[0],) + tuple(arg))
        elif op == "transpose":
            x = x.transpose([0] + [p + 1 for p in arg])
        elif op == "to_channels_last":
            x = np.moveaxis(x, 1, -1)
        else:
            x = apply_float_steps(x, [(op, arg)])
    return x


def pre_op_shapes(iq) -> list[tuple[int, ...]]:
    """The per-sample shape before each pre-op and, last, the shape the quantizer sees."""
    shapes = [tuple(iq.float_shape)]
    for op, arg in iq.pre_ops:
        s = shapes[-1]
        if op == "reshape":
            s = tuple(arg)
        elif op == "transpose":
            s = tuple(s[p] for p in arg)
        elif op == "to_channels_last":
            s = s[1:] + s[:1]
        shapes.append(s)
    return shapes


def unapply_pre_ops(iq, y: np.ndarray) -> np.ndarray:
    """Float inputs that the pre-ops map to ``y`` (given in the quantizer's layout), computed
    backwards in float64: up to float32 rounding, ``apply_pre_ops(unapply_pre_ops(y)) == y``."""
    shapes = pre_op_shapes(iq)
    y = np.asarray(y, np.float64).reshape((-1,) + shapes[-1])
    for (op, arg), before in reversed(list(zip(iq.pre_ops, shapes[:-1]))):
        if op == "reshape":
            y = y.reshape((y.shape[0],) + before)
        elif op == "transpose":
            y = y.transpose([0] + [int(p) + 1 for p in np.argsort(arg)])
        elif op == "to_channels_last":
            y = np.moveaxis(y, -1, 1)
        else:
            y = INVERSE_STEPS[op](y, np.asarray(arg, np.float64))
    return y.reshape((-1,) + tuple(iq.float_shape)).astype(np.float32)


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    input_quant: InputQuant
    meta: dict = field(default_factory=dict)

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    # -- persistence: ir.json (structure) + ir_constants.npz (weights) ---------------
    def save(self, directory: Path) -> None:
        from ..ir.contract import Requant

        def enc(v):
            if isinstance(v, Requant):
                return {"__requant__": v.to_json()}
            if isinstance(v, (np.integer,)):
                return int(v)
            if isinstance(v, (np.floating,)):
                return float(v)
            if isinstance(v, (list, tuple)):
                return [enc(x) for x in v]
            if isinstance(v, dict):
                return {k: enc(x) for k, x in v.items()}
            return v

        doc = {
            "ir_version": IR_VERSION,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "input_quant": asdict(self.input_quant),
            "tensors": [asdict(t) for t in self.tensors.values()],
            "nodes": [
                {"name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs,
                 "attrs": {k: enc(v) for k, v in n.attrs.items()}}
                for n in self.nodes
            ],
            "meta": self.meta,
        }
        (directory / "ir.json").write_text(json.dumps(doc, indent=1))
        np.savez(directory / "ir_constants.npz", **self.constants)

    @staticmethod
    def load(directory: str | Path) -> "Graph":
        from ..ir.contract import Requant

        directory = Path(directory)  # build and verify take a str too
        path = directory / "ir.json"
        try:
            doc = json.loads(path.read_text())
            consts = dict(np.load(directory / "ir_constants.npz"))
        except (OSError, ValueError) as e:
            raise BuildDirError(f"{path}: cannot read the IR ({e}); rebuild with `edgekit build`") from None
        if doc.get("ir_version") != IR_VERSION:
            raise BuildDirError(f"{path}: IR version {doc.get('ir_version')} is not {IR_VERSION}; rebuild")

        def dec(v):
            if isinstance(v, dict) and "__requant__" in v:
                return Requant.from_json(v["__requant__"])
            if isinstance(v, list):
                return [dec(x) for x in v]
            if isinstance(v, dict):
                return {k: dec(x) for k, x in v.items()}
            return v

        from .operators import InvalidAttributesError

        tensors = {}
        for t in doc["tensors"]:
            t["shape"] = tuple(t["shape"])
            tensors[t["name"]] = Tensor(**t)
        iq = doc["input_quant"]
        iq["float_shape"] = tuple(iq["float_shape"])
        try:
            nodes = [Node(n["name"], n["op"], n["inputs"], n["outputs"], {k: dec(v) for k, v in n["attrs"].items()})
                     for n in doc["nodes"]]
        except InvalidAttributesError as e:
            raise BuildDirError(f"{path}: {e}; rebuild with `edgekit build`") from None
        return Graph(
            tensors=tensors,
            nodes=nodes,
            inputs=doc["inputs"],
            outputs=doc["outputs"],
            constants=consts,
            input_quant=InputQuant(**iq),
            meta=doc.get("meta", {}),
        )
