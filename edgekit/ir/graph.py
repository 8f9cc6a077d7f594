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
    # ("reshape", shape), ("transpose", perm), ("to_channels_last", chw_shape); per sample.
    pre_ops: list = field(default_factory=list)
    # "qonnx": QONNX Quant (x / s + zp, clamp, round half to even); "tflite": TFLite's QUANTIZE
    # (round half away from zero of x / s, then + zp, clamp). contract.quantize / quantize_tflite.
    rounding: str = "qonnx"


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
    def load(directory: Path) -> "Graph":
        from ..ir.contract import Requant

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
