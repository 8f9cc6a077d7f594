"""DSP dense with int8 weights in flash: dense's blocks of 4 output rows, each row's k-quad one
word of its int8 weights in their own order, widened in registers by SXTB16 and SXTB16 ROR #8
(templates/cortexm/ops_dsp/dense.c.j2 with ``int8_weights``, docs/kernels.md)."""
from __future__ import annotations

import numpy as np

from .common import Int8WeightsRefusal, byte_words
from .dense import DenseDsp


class DenseInt8(Int8WeightsRefusal, DenseDsp):
    name = "dense_int8"
    # below dense: under --optimize speed the int16 layout goes first, where the flash allows
    priority = 9
    modes = frozenset({"size", "balanced", "speed"})
    int8_weights = True
    weight_form = "int8 weights (SXTB16)"
    tail_itemsize = 1
    cost_kinds = {"dense_int8": DenseDsp.cost_kinds["dense_opt"]}
    cost_reduced = {"dense_int8": DenseDsp.cost_reduced["dense_opt"]}
    cost_work = {"dense_int8": DenseDsp.cost_work["dense_opt"]}

    def quad_words(self, body: np.ndarray) -> np.ndarray:
        """Per block and quad, one word per row: w[r][4q..4q+3] as bytes, so SXTB16 gives
        (w[r][4q], w[r][4q+2]) and SXTB16 ROR #8 (w[r][4q+1], w[r][4q+3]), the halves the input
        word's two extensions pair with."""
        words = byte_words(body[..., 0], body[..., 1], body[..., 2], body[..., 3])   # (blocks, rows, quads)
        return words.transpose(0, 2, 1).reshape(-1)                                # block, quad, row

    def instructions_saved_by_int16(self, sel) -> int:
        # per k-quad of a block of 4 rows: 2 LDM + 8 SXTB16 against 2 LDM of int16 pairs
        d = sel.ctx
        return 8 * (d["rows_pad"] // 4) * d["quads"]

    def flash_bytes(self, sel, node, graph) -> int:
        # the int8 words replace the layer's weights in flash (the reference copy is compiled
        # out; the bias is shared): only the padding rows are extra
        return max(0, sel.weight_bytes - graph.constants[node.inputs[1]].nbytes)


VARIANTS = (DenseInt8(),)
