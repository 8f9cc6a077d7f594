"""The operator spec and registry: one :class:`Op` subclass per IR operator, found by name.

An operator brings its simulator kernel (``simulate``), the Jinja template that emits
its C kernel (``template`` plus ``c_context``) and its cost (``macs``). Lowerings from
front-end graphs live with the front ends and only create IR nodes.

Layering: the operators themselves live in the package ``edgekit.ops`` (one module each),
which imports the ir layer (this module, the contract). The ir layer never imports
``edgekit.ops``: :func:`operators` discovers that package by name on the first lookup.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..registry import Registry, discover, place

OPERATOR_PACKAGE = "edgekit.ops"
_OPS: Registry["Op"] = Registry("IR operator")
_discovered = False


class Op:
    name: str = ""
    template: str | None = None  # under templates/cortexm/ops/
    alias: bool = False  # output shares the input's memory (no code emitted)
    inplace: bool = False  # elementwise: may overwrite a dying input (ir/planner.py)

    def inplace_inputs(self, node, graph) -> list[str]:
        """Activation inputs whose bytes the output may reuse: the kernel writes output
        element i only after its last read of that input's element i, walking upward."""
        if self.inplace:
            return [t for t in node.inputs if not graph.tensors[t].const]
        return []

    def simulate(self, node, inputs: list[np.ndarray], graph) -> list[np.ndarray]:
        raise NotImplementedError

    def c_context(self, node, graph) -> dict:
        return {}

    def macs(self, node, graph) -> int:
        return 0


def register(cls: type[Op]) -> type[Op]:
    """Class decorator of an operator module: registers one instance under ``cls.name``."""
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
