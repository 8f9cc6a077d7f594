"""The operator spec and registry: one :class:`Op` subclass per IR operator, found by name.

An operator declares everything about itself in its module: its typed attributes (a
dataclass, checked whenever a node is created or loaded), its simulator kernel
(``simulate``), its cost (``macs``), which inputs it may overwrite (``inplace`` /
``inplace_inputs``), whether it produces an int32 accumulator that passes may requantize in
its epilogue (``accumulates``), whether its weights are packed below 8 bits in flash
(``packs_weights``), the Jinja template of its reference C kernel (``template`` plus
``c_context``) and the hls4ml layers it becomes on the FPGA path (``hls_layers``).
Lowerings from front-end graphs live with the front ends and only create IR nodes.

Layering: the operators themselves live in the package ``edgekit.ops`` (one module each),
which imports the ir layer (this module, the contract). The ir layer never imports
``edgekit.ops``: :func:`operators` discovers that package by name on the first lookup.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UnsupportedOpError
from ..registry import Registry, discover, place

OPERATOR_PACKAGE = "edgekit.ops"
_OPS: Registry["Op"] = Registry("IR operator")
_discovered = False

HLS_ROLES = ("compute", "activation", "pass-through")


@dataclass(frozen=True)
class HlsLayer:
    """An hls4ml layer class an IR operator becomes on the FPGA path, and its role there:
    ``compute`` (weights and an accumulator; ``geometry(layer)`` gives fan-in, outputs and
    positions, MACs = their product), ``activation`` (ReLU or a quantizer's linear
    activation: a rounding point) or ``pass-through`` (moves values without changing them)."""

    class_name: str
    role: str
    geometry: Callable | None = None

    def __post_init__(self):
        if self.role not in HLS_ROLES:
            raise ValueError(f"HLS role {self.role!r} is not one of {HLS_ROLES}")
        if (self.role == "compute") != (self.geometry is not None):
            raise ValueError(f"hls4ml layer {self.class_name}: compute layers, and only they, have a geometry")


class InvalidAttributesError(ValueError):
    """A node's attributes do not match its operator's declared attributes."""


class Op:
    name: str = ""
    attributes: type | None = None  # a dataclass: the node attributes (None: the op has none)
    template: str | None = None  # under templates/cortexm/ops/
    alias: bool = False  # output shares the input's memory (no code emitted)
    inplace: bool = False  # elementwise: may overwrite a dying input (ir/planner.py)
    accumulates: bool = False  # int32 accumulator out; ir/passes.py fuses a requant/ReLU into attribute "requant"
    packs_weights: bool = False  # input 1 holds weights, packed in flash when 2 or 4 bits wide
    hls_layers: tuple[HlsLayer, ...] = ()
    # simulate() also takes activations as float32 arrays of exact integer codes (the simulator
    # then passes a float32 output of one kernel on as it is, instead of through int64)
    float32_inputs: bool = False

    def inplace_inputs(self, node, graph) -> list[str]:
        """Activation inputs whose bytes the output may reuse: the kernel writes output
        element i only after its last read of that input's element i, walking upward."""
        if self.inplace:
            return [t for t in node.inputs if not graph.tensors[t].const]
        return []

    def simulate(self, node, inputs: list[np.ndarray], graph) -> list[np.ndarray]:
        """The node's outputs for a batch of inputs. An op whose :meth:`prepare_node` returns
        something takes it as a fourth argument (``None``: work it out here)."""
        raise NotImplementedError

    def prepare_node(self, node, graph):
        """What :meth:`simulate` needs for this node that does not depend on the batch (weights
        laid out for the GEMM, sorted thresholds): the simulator asks once per graph, not once
        per block. None: nothing."""
        return None

    def prepare_simulation(self) -> None:
        """Load what :meth:`simulate` needs before the simulator limits the thread pools (a
        library loaded later, in a worker, would bring a pool of its own)."""

    def c_context(self, node, graph) -> dict:
        return {}

    def macs(self, node, graph) -> int:
        return 0

    def attrs(self, node):
        """The node's attributes as this operator's typed dataclass."""
        return self.attributes(**node.attrs) if self.attributes else None

    def check_attrs(self, node) -> None:
        """Raise InvalidAttributesError unless the node has exactly the declared attributes, of the declared types."""
        fields = dataclasses.fields(self.attributes) if self.attributes else ()
        hints = _type_hints(self.attributes) if self.attributes else {}
        where = f"node '{node.name}' (IR op '{self.name}')"
        unknown = sorted(set(node.attrs) - {f.name for f in fields})
        if unknown:
            raise InvalidAttributesError(f"{where}: unknown attribute(s) {', '.join(unknown)}")
        for f in fields:
            if f.name not in node.attrs:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InvalidAttributesError(f"{where}: attribute '{f.name}' is missing")
                continue
            value = node.attrs[f.name]
            if not conforms(value, hints[f.name]):
                raise InvalidAttributesError(f"{where}: attribute '{f.name}' = {value!r} is not of type "
                                             f"{_type_name(hints[f.name])}")


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def conforms(value, hint) -> bool:
    """Whether a JSON-like or numpy value has the annotated type (lists accept tuples; ints numpy ints)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (typing.Any,)
        return isinstance(value, (list, tuple)) and all(conforms(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is typing.Any:
        return True
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def register(cls: type[Op]) -> type[Op]:
    """Class decorator of an operator module: registers one instance under ``cls.name``."""
    if cls.attributes is not None and not dataclasses.is_dataclass(cls.attributes):
        raise TypeError(f"{place(cls)}: attributes must be a dataclass")
    _OPS.add(cls.name, cls(), place(cls))
    return cls


def operators() -> Registry[Op]:
    """Every IR operator by name (the operator package is discovered on the first call)."""
    global _discovered
    if not _discovered:
        discover(OPERATOR_PACKAGE)
        _discovered = True
    return _OPS


def get_op(name: str, node_name: str = "?") -> Op:
    try:
        return operators()[name]
    except KeyError:
        raise UnsupportedOpError(f"node '{node_name}': IR op '{name}' has no implementation") from None


def check_node(node) -> None:
    """The node's op exists and its attributes are the ones the op declares (InvalidAttributesError)."""
    get_op(node.op, node.name).check_attrs(node)


_HLS: Registry[tuple[Op, HlsLayer]] | None = None


def hls_layers() -> Registry[tuple[Op, HlsLayer]]:
    """hls4ml layer class -> (the operator that declares it, its declaration); a class belongs to one operator."""
    global _HLS
    if _HLS is None:
        mapping: Registry[tuple[Op, HlsLayer]] = Registry("hls4ml layer class")
        for op in operators().values():
            for h in op.hls_layers:
                mapping.add(h.class_name, (op, h), place(type(op)))
        _HLS = mapping
    return _HLS


def hls_role(class_name: str) -> str | None:
    """The role of an hls4ml layer class on the FPGA path (see HlsLayer), None if no operator declares it."""
    entry = hls_layers().get(class_name)
    return entry[1].role if entry else None
