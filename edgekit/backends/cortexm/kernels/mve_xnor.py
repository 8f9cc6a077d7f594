"""Helium (MVE) binary kernels for the Cortex-M55: binary weights x binary inputs as XOR + popcount on
128-bit vectors (templates/cortexm/ops_mve/xnor.c.j2, docs/kernels.md "Binary and ternary layers").

MVE has no popcount (no VCNT) either. Each row is cut into blocks of 16 words (4 vectors): two carry-save adders fold the block's four XOR vectors into the ``ones`` and
``twos`` counters, a third sends its carry of weight 4 to a byte popcount (SWAR on 8-bit lanes: VSHR, VAND,
VSUB/VADD) summed by one VADDVA; ``ones`` and ``twos`` are counted once per row, and the words past the last whole block vector by vector (tail-predicated
loads: lanes past the row read 0). A convolution gathers each
output pixel's window into a patch once (a few predicated vector copies) and counts every output channel
on it. The sign bits are packed in the DSP kernels' order (``binary.dsp_order``), the weights in the same.
Equal, bit for bit, to the reference kernels (integer contract, section 7i).
"""
from __future__ import annotations

import numpy as np

from .base import KernelVariant, Selection
from .binary import (WORD, bipolar_tensor, bit_planes, dsp_order, sign_output, sign_thresholds, weight_kind,
                     words_ctx, xnor_conv_refusal)

#: words per carry-save block (4 Helium vectors), per vector
BLOCK, VECTOR = 16, 4


class _MveXnor(KernelVariant):
    features = frozenset({"dsp", "mve"})
    priority = 52
    template = "ops_mve/xnor.c.j2"
    bit_packed = True  # weights stored at 1 bit (edgekit bench binary's flash per weight)

    def applies(self, node, graph) -> bool:
        return weight_kind(graph.constants[node.inputs[1]]) == "binary" and bipolar_tensor(graph, node.inputs[0])

    def flash_bytes(self, sel, node, graph) -> int:
        return 0  # the packed words replace the layer's int8 weights (compiled for the reference kernel only)

    def _ctx(self, node, graph, rows: np.ndarray, n: int) -> dict:
        words = rows.shape[1]
        return {"blocks": words // BLOCK, "tail": words % BLOCK, "row_words": words, "w_words": words_ctx(rows),
                "n": n, "sign": sign_output(node), "thresholds": sign_thresholds(node, graph, n),
                "uses_bias": not sign_output(node), "requant": node.attrs.get("requant")}


class DenseXnorMve(_MveXnor):
    name = "mve_dense_xnor"
    ops = ("dense",)
    cost_kinds = {"mve_dense_xnor": ("vectors", "outputs", "const")}
    cost_reduced = {"mve_dense_xnor": ("vectors", "outputs")}
    cost_work = {"mve_dense_xnor": (("vectors", VECTOR * WORD), ("outputs", 1))}

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]]
        n_out, n_in = w.shape
        rows = bit_planes(w[:, dsp_order(n_in)], lambda c: c < 0)
        ctx = dict(self._ctx(node, graph, rows, n_in), conv=False, n_in=n_in, n_out=n_out, words=rows.shape[1],
                   summary=f"1-bit weights, XOR + Harley-Seal popcount on Helium vectors, {rows.shape[1]} "
                           "words per row")
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(ctx["w_words"]))

    def cost_features(self, info: dict) -> tuple[str, dict]:
        n_in, n_out = int(np.prod(info["in"])), int(np.prod(info["out"]))
        return "mve_dense_xnor", {"vectors": n_out * -(-(-(-n_in // WORD)) // VECTOR), "outputs": n_out,
                                  "const": 1}


class ConvXnorMve(_MveXnor):
    name = "mve_conv_xnor"
    ops = ("conv2d",)
    cost_kinds = {"mve_conv_xnor": ("vectors", "pixels", "outputs", "const")}
    cost_reduced = {"mve_conv_xnor": ("vectors", "outputs")}
    cost_work = {"mve_conv_xnor": (("vectors", VECTOR * WORD), ("outputs", 1))}

    def claims(self, node) -> bool:
        return not node.attrs.get("depthwise")

    def refusal(self, node, graph, plan) -> str | None:
        return xnor_conv_refusal(node)

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]]                   # (oc, kh, kw, ic)
        oc, kh, kw, ic = w.shape
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        ih, iw, _ = x.shape[-3:]
        oh, ow, _ = y.shape[-3:]
        icw = -(-ic // WORD)
        rows = bit_planes(w.reshape(oc * kh * kw, ic)[:, dsp_order(ic)], lambda c: c < 0).reshape(oc, -1)
        sh, sw = node.attrs["stride"]
        ctx = dict(self._ctx(node, graph, rows, kh * kw * ic), conv=True, ih=ih, iw=iw, ic=ic, icw=icw, oh=oh,
                   ow=ow, oc=oc, kh=kh, kw=kw, sh=sh, sw=sw, run=kw * icw)
        ctx["scratch_bytes"] = 4 * (ih * iw * icw + kh * kw * icw)
        ctx["summary"] = (f"1-bit weights, each window gathered into {ctx['row_words']} words, XOR + Harley-Seal "
                          "popcount on Helium vectors")
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * len(ctx["w_words"]))

    def cost_features(self, info: dict) -> tuple[str, dict]:
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, kw = info["kernel"]
        return "mve_conv_xnor", {"vectors": oh * ow * oc * -(-(kh * kw * -(-ic // WORD)) // VECTOR),
                                 "pixels": oh * ow, "outputs": oh * ow * oc, "const": 1}


VARIANTS = (DenseXnorMve(), ConvXnorMve())
