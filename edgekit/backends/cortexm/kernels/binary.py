"""Binary and ternary kernels: weights bit-packed in flash (1 bit per binary weight, 2 per ternary
one), no multiplications (templates/cortexm/ops_bin/, docs/kernels.md "Binary and ternary layers").

- ``dense_xnor`` / ``conv_xnor``: binary weights x binary activations (both -1/+1). The layer
  packs its input's signs into 32-bit words and computes each dot product of n terms as
  ``n - 2 * popcount(a XOR w)`` (an identity, docs/integer-contract.md). Portable C on every
  core; on cores with the DSP extension the popcount runs as a Harley-Seal carry-save adder
  tree over 16 words with USADA8 byte sums (the Cortex-M has no popcount instruction).
- ``dense_binary``: binary (-1/+1) or ternary (-1/0/+1) weights x integer activations as
  additions and subtractions: ``acc = sum(x[w=+1]) - sum(x[w=-1])``, with ``sum(x[w=+1]) =
  sum(x) - sum(x[w!=+1])`` for binary rows, so a binary row needs one bit plane, a ternary
  row two (plus and minus).

All are portable C (no core feature), emitted unconditionally: the host runner, the Cortex-M0
and the DSP cores run the same source, equal bit for bit to the reference kernels.
"""
from __future__ import annotations

import numpy as np

from ....ir import contract
from . import xnor_asm
from .base import KernelVariant, Selection

WORD = 32
#: the requantization that binarizes an accumulator (frontends/qonnx_ops/bipolar.py): 2a + 1 clamped to [-1, 1]
SIGN_REQUANT = contract.make_requant(np.array([2.0]), 1, -1, 1)
#: operators whose output holds only values of its (first) input
_SAME_VALUES = ("maxpool", "reshape")


def bit_planes(codes: np.ndarray, want) -> np.ndarray:
    """Rows of ``codes`` (rows, n) as 32-bit words (rows, ceil(n / 32)), bit k of word j set
    where ``want(code[32 j + k])``; bits past n are 0."""
    rows, n = codes.shape
    words = -(-n // WORD)
    bits = np.zeros((rows, words * WORD), np.uint64)
    bits[:, :n] = want(np.asarray(codes)).astype(np.uint64)
    weights = np.uint64(1) << np.arange(WORD, dtype=np.uint64)
    return (bits.reshape(rows, words, WORD) * weights).sum(axis=2).astype(np.uint64)


def dsp_order(n: int) -> np.ndarray:
    """The columns of n codes in the bit order of the DSP kernels' packed words (ek_pack_signs_dsp): in each
    whole word of 32, bit 8 b + k holds code 4 k + b; a last part word keeps the plain order."""
    order = np.arange(n)
    bits = np.arange(WORD)
    for j in range(n // WORD):
        order[WORD * j + bits] = WORD * j + 4 * (bits % 8) + bits // 8
    return order


def sign_thresholds(node, graph, n: int) -> list[int] | None:
    """For a sign output: the most XOR bits of each output that still give +1 (bias + n - 2 count >= 0),
    else None."""
    if not sign_output(node):
        return None
    bias = graph.constants[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(1, np.int64)
    outputs = graph.tensors[node.outputs[0]].shape[-1]
    bias = np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (outputs,))
    return [int(v) for v in (bias + n) // 2]


def weight_kind(w: np.ndarray) -> str | None:
    """"binary" (every code -1 or +1), "ternary" (codes in -1, 0, +1) or None."""
    values = set(np.unique(w).tolist()) if w.size else set()
    if values and values <= {-1, 1}:
        return "binary"
    if values and values <= {-1, 0, 1}:
        return "ternary"
    return None


def xnor_conv_refusal(node) -> str | None:
    """Why an XNOR convolution (DSP or Helium) cannot take ``node``, or None."""
    a = node.attrs
    if any(a["pad"]):
        return "padding (a padded tap is 0, not -1 or +1)"
    if list(a["dilation"]) != [1, 1]:
        return "dilation"
    if a.get("residual"):
        return "fused residual add"
    return None


def bipolar_tensor(graph, name: str) -> bool:
    """Whether every value of tensor ``name`` is -1 or +1 by construction: the output of a sign
    requantization, of a single bipolar threshold, or a max-pool/reshape of such a tensor."""
    t = graph.tensors[name]
    if t.const or (t.qmin, t.qmax) != (-1, 1) or t.zero_point != 0:
        return False
    prod = next((n for n in graph.nodes if name in n.outputs), None)
    if prod is None:
        return False
    if prod.op in _SAME_VALUES:
        return bipolar_tensor(graph, prod.inputs[0])
    if prod.op == "threshold":
        a = prod.attrs
        return a["out_min"] == -1 and a["step"] == 2 and graph.constants[prod.inputs[1]].shape[1] == 1
    return prod.op in ("requantize", "dense", "conv2d") and prod.attrs.get("requant") == SIGN_REQUANT \
        and not prod.attrs.get("residual")


def words_ctx(words: np.ndarray) -> list[int]:
    return [int(v) for v in words.ravel()]


def paired(words: np.ndarray, group: int | None = None) -> np.ndarray:
    """Rows of words in the layout the DSP popcount reads (kernels/xnor_asm.py): each row cut into runs of
    ``group`` words (default: the whole row), in each run every pair (w0, w1) of its first group // 2 * 2
    words stored as (w1, w0 ^ w1)."""
    rows, n = words.shape
    group = group or n
    runs = words.reshape(rows, n // group, group)
    out = runs.copy()
    even = group // 2 * 2
    out[:, :, 0:even:2] = runs[:, :, 1:even:2]
    out[:, :, 1:even:2] = runs[:, :, 0:even:2] ^ runs[:, :, 1:even:2]
    return out.reshape(rows, n)


def sign_output(node) -> bool:
    """Whether the layer's requantization is the sign (-1/+1 out): the kernel then compares instead."""
    return node.attrs.get("requant") == SIGN_REQUANT


def _requant_ctx(node) -> dict:
    return {"requant": node.attrs.get("requant")}


class DenseXnor(KernelVariant):
    name = "dense_xnor"
    bit_packed = True  # weights stored at 1 or 2 bits (edgekit bench binary's flash per weight)
    ops = ("dense",)
    priority = 50
    template = "ops_bin/dense_xnor.c.j2"
    cost_kinds = {"dense_xnor": ("words", "outputs", "const")}
    cost_reduced = {"dense_xnor": ("words", "outputs")}
    cost_work = {"dense_xnor": (("words", WORD), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        return weight_kind(graph.constants[node.inputs[1]]) == "binary" and bipolar_tensor(graph, node.inputs[0])

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]]
        n_out, n_in = w.shape
        words = bit_planes(w, lambda c: c < 0)               # set: -1, as the input's sign bits
        dsp_words = bit_planes(w[:, dsp_order(n_in)], lambda c: c < 0)
        ctx = {"n_in": n_in, "n_out": n_out, "words": words.shape[1], "w_words": words_ctx(words),
               "w_pairs": words_ctx(paired(dsp_words)), "sign": sign_output(node),
               "thresholds": sign_thresholds(node, graph, n_in), "uses_bias": not sign_output(node),
               "chunks": xnor_asm.chunks(xnor_asm.group_items(1, words.shape[1], 0)),
               "summary": "1-bit weights, XOR + popcount on packed words"}
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * words.size, portable=True)

    def flash_bytes(self, sel, node, graph) -> int:
        return 0  # replaces the layer's weights

    def cost_features(self, info: dict) -> tuple[str, dict]:
        n_in, n_out = int(np.prod(info["in"])), int(np.prod(info["out"]))
        return "dense_xnor", {"words": n_out * -(-n_in // WORD), "outputs": n_out, "const": 1}


class DenseBinary(KernelVariant):
    name = "dense_binary"
    bit_packed = True
    ops = ("dense",)
    priority = 49
    template = "ops_bin/dense_binary.c.j2"
    cost_kinds = {"dense_binary": ("macs", "outputs", "const")}
    cost_reduced = {"dense_binary": ("macs", "outputs")}
    cost_work = {"dense_binary": (("macs", 1), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        return weight_kind(graph.constants[node.inputs[1]]) is not None

    def refusal(self, node, graph, plan) -> str | None:
        if graph.tensors[node.inputs[0]].dtype not in ("int8", "uint8", "int16"):
            return f"{graph.tensors[node.inputs[0]].dtype} input"
        return None

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]]
        n_out, n_in = w.shape
        kind = weight_kind(w)
        minus = bit_planes(w, lambda c: c < 0)
        planes = [minus] if kind == "binary" else [bit_planes(w, lambda c: c > 0), minus]
        stream = np.stack(planes, axis=1)                    # row, plane, word
        ctx = {"n_in": n_in, "n_out": n_out, "words": minus.shape[1], "ternary": kind == "ternary",
               "w_words": words_ctx(stream),
               "summary": f"{kind} weights at {len(planes)} bit(s) each, additions and subtractions"}
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * stream.size, portable=True)

    def flash_bytes(self, sel, node, graph) -> int:
        return 0

    def cost_features(self, info: dict) -> tuple[str, dict]:
        n_in, n_out = int(np.prod(info["in"])), int(np.prod(info["out"]))
        return "dense_binary", {"macs": n_in * n_out, "outputs": n_out, "const": 1}


class ConvXnor(KernelVariant):
    name = "conv_xnor"
    bit_packed = True
    ops = ("conv2d",)
    priority = 50
    template = "ops_bin/conv_xnor.c.j2"
    cost_kinds = {"conv_xnor": ("words", "pixels", "outputs", "const")}
    cost_reduced = {"conv_xnor": ("words", "outputs")}
    cost_work = {"conv_xnor": (("words", WORD), ("outputs", 1))}

    def claims(self, node) -> bool:
        return not node.attrs.get("depthwise")

    def applies(self, node, graph) -> bool:
        return weight_kind(graph.constants[node.inputs[1]]) == "binary" and bipolar_tensor(graph, node.inputs[0])

    def refusal(self, node, graph, plan) -> str | None:
        return xnor_conv_refusal(node)

    def select(self, node, graph, plan) -> Selection:
        w = graph.constants[node.inputs[1]]                   # (oc, kh, kw, ic)
        oc, kh, kw, ic = w.shape
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        ih, iw, _ = x.shape[-3:]
        oh, ow, _ = y.shape[-3:]
        icw = -(-ic // WORD)                                  # words per input pixel
        # per output channel, per tap (ky, kx): the tap's ic channels in icw words
        words = bit_planes(w.reshape(oc * kh * kw, ic), lambda c: c < 0).reshape(oc, kh * kw * icw)
        dsp_words = bit_planes(w.reshape(oc * kh * kw, ic)[:, dsp_order(ic)], lambda c: c < 0).reshape(oc, -1)
        sh, sw = node.attrs["stride"]
        # DSP cores read each window in place: its kh rows of kw pixels of icw words in the packed input
        items = [i for ky in range(kh) for i in xnor_asm.group_items(kw, icw, icw, ky * iw * icw)]
        ctx = {"ih": ih, "iw": iw, "ic": ic, "oh": oh, "ow": ow, "oc": oc, "kh": kh, "kw": kw, "sh": sh, "sw": sw,
               "icw": icw, "patch": kh * kw * icw, "n": kh * kw * ic, "w_words": words_ctx(words),
               "w_pairs": words_ctx(paired(dsp_words, icw)), "sign": sign_output(node), "chunks": xnor_asm.chunks(items),
               "thresholds": sign_thresholds(node, graph, kh * kw * ic), "uses_bias": not sign_output(node),
               "scratch_bytes": 4 * ih * iw * icw,
               "summary": "1-bit weights, XOR + popcount on packed words"}
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * words.size, portable=True)

    def flash_bytes(self, sel, node, graph) -> int:
        return 0

    def cost_features(self, info: dict) -> tuple[str, dict]:
        ih, iw, ic = info["in"]
        oh, ow, oc = info["out"]
        kh, kw = info["kernel"]
        patch = kh * kw * -(-ic // WORD)
        return "conv_xnor", {"words": oh * ow * oc * patch, "pixels": oh * ow, "outputs": oh * ow * oc, "const": 1}


VARIANTS = (DenseXnor(), DenseBinary(), ConvXnor())
