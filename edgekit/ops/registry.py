"""The operator registry: one :class:`Op` subclass per IR operator, found by name.

An operator brings its simulator kernel (``simulate``), the Jinja template that emits
its C kernel (``template`` plus ``c_context``) and its cost (``macs``). Lowerings from
front-end graphs live with the front ends and only create IR nodes.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..registry import Registry, place

OPS: Registry["Op"] = Registry("IR operator")


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
    OPS.add(cls.name, cls(), place(cls))
    return cls


def get_op(name: str, node_name: str = "?") -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise UnsupportedOpError(f"node '{node_name}': IR op '{name}' has no implementation") from None
