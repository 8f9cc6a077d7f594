"""DSP depthwise of any shape dw3 does not take, with int8 weights in flash (``--optimize
size|balanced``): dwk's four channels per step, but one word of four int8 weights per tap and
channel quad, widened in registers by SXTB16 / SXTB16 ROR #8 into exactly the (c, c + 2) and
(c + 1, c + 3) halves dwk stores as int16 (templates/cortexm/ops_dsp/dwk.c.j2 with ``int8``)."""
from __future__ import annotations

import numpy as np

from ....ops.conv2d import conv_geometry
from .common import Int8WeightsRefusal, byte_words, valid_taps
from .dwk import CHANNELS, Dwk


class DwkInt8(Int8WeightsRefusal, Dwk):
    name = "dwk_int8"
    # above dwk: under size and balanced the int8 words go first; under speed only dwk is offered
    priority = 21
    modes = frozenset({"size", "balanced"})
    cost_kinds = {"dwk_int8": Dwk.cost_kinds["dwk"]}
    cost_reduced = {"dwk_int8": Dwk.cost_reduced["dwk"]}
    cost_work = {"dwk_int8": Dwk.cost_work["dwk"]}

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
        kh, kw, oc = w.shape
        c4 = oc - oc % CHANNELS
        quads = w.reshape(kh * kw, oc)[:, :c4].reshape(kh * kw, c4 // CHANNELS, CHANNELS)
        words = byte_words(quads[..., 0], quads[..., 1], quads[..., 2], quads[..., 3])
        sel.ctx.update(int8=True, w_words=words.reshape(-1).tolist(),
                       summary=sel.ctx["summary"].replace("SMLABB/SMLATT", "int8 weights (SXTB16), SMLABB/SMLATT"))
        sel.weight_bytes = 4 * words.size + kh * kw * (oc - c4)
        g = conv_geometry(node, graph)
        # executed taps per channel quad: what the int16 words (one LDRD instead of LDR + 2 SXTB16) save on
        sel.ctx["taps_per_quad"] = (valid_taps(g["oh"], g["ih"], kh, g["sh"], g["pad_t"], g["dh"])
                                    * valid_taps(g["ow"], g["iw"], kw, g["sw"], g["pad_l"], g["dw"]))
        return sel

    def instructions_saved_by_int16(self, sel) -> int:
        # per executed tap and channel quad: LDR + 2 SXTB16 against one LDRD of dwk's int16 pairs
        return 2 * sel.ctx["taps_per_quad"] * (sel.ctx["c4"] // CHANNELS)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        return "dwk_int8", super().cost_features(info)[1]


VARIANTS = (DwkInt8(),)
