"""DSP dense: blocks of 4 output rows, k-quads of int16 weight pairs multiplied with SMLAD
(templates/cortexm/ops_dsp/dense.c.j2, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from .base import KernelVariant, Selection
from .common import extend_insn, pair_words, requant_ctx

#: output rows per block
DENSE_ROWS = 4
#: inputs per k-quad (one input word)
QUAD = 4
#: k-quads per loop iteration
DENSE_UNROLL = 2


class DenseDsp(KernelVariant):
    name = "dense"
    ops = ("dense",)
    features = frozenset({"dsp"})
    priority = 10
    template = "ops_dsp/dense.c.j2"
    cost_kinds = {"dense_opt": ("loops", "rem", "tail", "blocks", "outputs", "const")}
    cost_reduced = {"dense_opt": ("loops", "outputs")}
    cost_work = {"dense_opt": (("loops", DENSE_ROWS * QUAD * DENSE_UNROLL), ("outputs", 1))}
    # weights widened to int16 in flash (2 bytes per weight): only when the build asks for speed
    modes = frozenset({"speed"})
    int8_weights = False

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        if graph.constants[node.inputs[1]].shape[1] < QUAD:
            # the kernel's body reads whole input words: with no k-quad its weight array would be empty
            return f"fewer than {QUAD} inputs"
        return None

    def select(self, node, graph, plan) -> Selection:
        x = graph.tensors[node.inputs[0]]
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (n_out, n_in)
        n_out, n_in = w.shape
        quads, tail = divmod(n_in, QUAD)
        rows_pad = -(-n_out // DENSE_ROWS) * DENSE_ROWS
        wpad = np.zeros((rows_pad, n_in), np.int64)
        wpad[:n_out] = w
        blocks = wpad.reshape(rows_pad // DENSE_ROWS, DENSE_ROWS, n_in)
        # per block, per k-quad: (w[r][4q], w[r][4q+2]) for r = 0..3, then (w[r][4q+1], w[r][4q+3])
        body = blocks[:, :, :QUAD * quads].reshape(rows_pad // DENSE_ROWS, DENSE_ROWS, quads, QUAD)
        stream = self.quad_words(body)
        tail_w = blocks[:, :, QUAD * quads:].transpose(0, 2, 1).reshape(-1)    # block, k, row
        rq = node.attrs.get("requant")
        ctx = {"n_in": n_in, "n_out": n_out, "rows_pad": rows_pad, "quads": quads, "tail": tail,
               "unroll": DENSE_UNROLL, "loops": quads // DENSE_UNROLL, "rem": quads % DENSE_UNROLL,
               "ext": "sxtb16" if x.dtype == "int8" else "uxtb16", "int8_weights": self.int8_weights,
               "w_words": stream.tolist(), "tail_w": tail_w.tolist(),
               "summary": f"{DENSE_ROWS} rows per block, {self.weight_form}, SMLAD"}
        ctx.update(requant_ctx(rq, rows_pad))
        return Selection(self.name, self.template, ctx=ctx,
                         weight_bytes=4 * stream.size + self.tail_itemsize * tail_w.size)

    weight_form = "int16 weights"
    tail_itemsize = 2

    def quad_words(self, body: np.ndarray) -> np.ndarray:
        """The weight words of the k-quads, (blocks, rows, quads, 4) -> flat, in the order the
        kernel reads them: per block and quad, (w[r][4q], w[r][4q+2]) for the 4 rows, then
        (w[r][4q+1], w[r][4q+3]): the halves SXTB16 makes of the input word and of it rotated by 8."""
        wa = pair_words(body[..., 0], body[..., 2])                    # (blocks, rows, quads)
        wb = pair_words(body[..., 1], body[..., 3])
        return np.stack([wa, wb], axis=2).transpose(0, 3, 2, 1).reshape(-1)   # block, quad, (a|b), row

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts: unrolled k-quad iterations, the remaining quad, tail inputs, per block."""
        n_in = int(np.prod(info["in"]))
        n_out = int(np.prod(info["out"]))
        quads, tail = divmod(n_in, QUAD)
        blocks = -(-n_out // DENSE_ROWS)
        return next(iter(self.cost_kinds)), {"loops": blocks * (quads // DENSE_UNROLL), "rem": blocks * (quads % DENSE_UNROLL),
                             "tail": blocks * tail, "blocks": blocks, "outputs": n_out, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (DenseDsp(),)
