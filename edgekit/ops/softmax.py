"""Integer softmax over the last axis (see docs/integer-contract.md, section Softmax)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.contract import div_round
from ..ir.operators import Op, register


@dataclass
class SoftmaxAttrs:
    out_shift: int  # output scale 2^-out_shift
    zero_point: int
    lo: int
    hi: int


@register
class Softmax(Op):
    name = "softmax"
    attributes = SoftmaxAttrs
    template = "softmax.c.j2"
    inplace = True  # output i is written after input i is read (see ir/planner.py)

    def simulate(self, node, inputs, graph):
        x, table = inputs
        a = self.attrs(node)
        e = table.astype(np.int64)[x.max(axis=-1, keepdims=True) - x]
        q = div_round(e << a.out_shift, e.sum(axis=-1, keepdims=True))
        return [np.clip(q + a.zero_point, a.lo, a.hi)]

    def c_context(self, node, graph):
        a = self.attrs(node)
        return {"count": graph.tensors[node.inputs[0]].size, "shift": a.out_shift, "out_zp": a.zero_point,
                "lo": a.lo, "hi": a.hi}
