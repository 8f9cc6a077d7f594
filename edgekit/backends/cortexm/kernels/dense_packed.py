"""DSP dense with 4- or 2-bit weights packed in flash: dense's blocks of 4 output rows and k-quads, each
k-quad's weights of 2 rows (4-bit) or of all 4 rows (2-bit) in one word (templates/cortexm/ops_dsp/
dense_packed.c.j2, docs/kernels.md).

A row is a set of the word (kernels/packing_dsp.py): the top set in two's complement, the lower ones in
offset binary (code + 2^(bits - 1)). Then SXTB16 of the word itself and of ``word & low_mask(s)``
(s = 1, 2, ...) give, per byte, 2^(8 - bits) c0 + (the lower sets' bits) and the non-negative lower
parts, so each set costs one AND (none for the top one) besides the two SXTB16 and SMLAD, and the sums
S_s of these products give the rows exactly: row 0 = (S_0 - S_1) >> (8 - bits), row s = ((S_s - S_s+1)
>> (8 - (s + 1) bits)) - 2^(bits - 1) sum(x) (the offset times the sum of the inputs, once per
inference of the layer), the last row S_last - 2^(bits - 1) sum(x). The differences are exact modulo
2^32, so only the rows' scaled sums must fit in int32 (``refusal``)."""
from __future__ import annotations

import numpy as np

from ....ir.packing import pack
from .base import KernelVariant, Selection
from .common import accumulator_bounds, extend_insn, requant_ctx
from .packing_dsp import (BITS, low_mask, offset_of, packed_reference_bytes, range_refusal, scale_log2,
                          scaled_bound_refusal, set_words, sets_per_word, weight_bits)

#: output rows per block
ROWS = 4
#: inputs per k-quad (one input word)
QUAD = 4
#: k-quads per loop iteration
UNROLL = 2


class DensePacked(KernelVariant):
    name = "dense_packed"
    ops = ("dense",)
    features = frozenset({"dsp"})
    # above every int8-weight dense variant (dense_int8, dense_asm_int8): 4- or 2-bit weights stay packed
    priority = 15
    template = "ops_dsp/dense_packed.c.j2"
    modes = frozenset({"size", "balanced"})
    # a layer with 4- or 2-bit weights that this variant refuses loses its packing: listed as a fallback
    refusals_are_fallbacks = True
    cost_kinds = {"dense_packed": ("loops", "rem", "tail", "blocks", "outputs", "const")}
    cost_reduced = {"dense_packed": ("loops", "outputs")}
    cost_work = {"dense_packed": (("loops", ROWS * QUAD * UNROLL), ("outputs", 1))}

    def applies(self, node, graph) -> bool:
        return weight_bits(node, graph) in BITS

    def refusal(self, node, graph, plan) -> str | None:
        x = graph.tensors[node.inputs[0]]
        if extend_insn(x.dtype) is None:
            return f"{x.dtype} input"
        w = graph.constants[node.inputs[1]]
        if w.shape[1] < QUAD:
            return f"fewer than {QUAD} inputs"
        bits = weight_bits(node, graph)
        why = range_refusal(w, bits)
        if why:
            return why
        # the input zero point is in the bias (ops/dense.py): the sums hold the products only, the lower
        # sets' plus the offset times the inputs' sum
        k = QUAD * (w.shape[1] // QUAD)
        info = np.iinfo(x.dtype)
        x_abs = max(-int(info.min), int(info.max))
        bound = accumulator_bounds(np.zeros(w.shape[0], np.int64), w[:, :k], x.dtype, 0).max(initial=0)
        return scaled_bound_refusal(bound + offset_of(bits) * k * x_abs, bits)

    def select(self, node, graph, plan) -> Selection:
        x = graph.tensors[node.inputs[0]]
        bits = weight_bits(node, graph)
        sets = sets_per_word(bits)
        w = graph.constants[node.inputs[1]].astype(np.int64)          # (n_out, n_in)
        n_out, n_in = w.shape
        quads, tail = divmod(n_in, QUAD)
        rows_pad = -(-n_out // ROWS) * ROWS
        wpad = np.zeros((rows_pad, n_in), np.int64)
        wpad[:n_out] = w
        blocks = wpad.reshape(rows_pad // ROWS, ROWS, n_in)
        # per block and k-quad, the 4 rows' weights w[r][4q..4q+3] as sets: row r is set r % sets of word
        # r // sets (4-bit: rows 0-1 then 2-3; 2-bit: all four in one word)
        body = blocks[:, :, :QUAD * quads].reshape(rows_pad // ROWS, ROWS, quads, QUAD).transpose(0, 2, 1, 3)
        sets_of = body.reshape(rows_pad // ROWS, quads, ROWS // sets, sets, QUAD)
        words = set_words(sets_of, bits, offset=True).reshape(-1)
        # the last n_in % 4 inputs: per block, per input, the 4 rows' codes, packed as the reference packs them
        tail_codes = blocks[:, :, QUAD * quads:].transpose(0, 2, 1).reshape(-1)
        tail_bytes = pack(tail_codes, bits) if tail_codes.size else np.zeros(0, np.uint8)
        rq = node.attrs.get("requant")
        scale = scale_log2(bits)
        ctx = {"n_in": n_in, "n_out": n_out, "rows_pad": rows_pad, "quads": quads, "tail": tail,
               "unroll": UNROLL, "loops": quads // UNROLL, "rem": quads % UNROLL, "bits": bits, "sets": sets,
               "words_per_quad": ROWS // sets, "low_masks": [f"0x{low_mask(bits, s):08X}" for s in range(sets)],
               "offset": offset_of(bits), "shifts": [8 - (s + 1) * bits for s in range(sets)], "scale": scale,
               "ext": "sxtb16" if x.dtype == "int8" else "uxtb16",
               "w_words": words.tolist(), "tail_w": tail_bytes.tolist(),
               "summary": f"{ROWS} rows per block, {bits}-bit weights packed {sets * 4} per word (AND/SXTB16), SMLAD"}
        ctx.update(requant_ctx(rq, rows_pad))
        return Selection(self.name, self.template, ctx=ctx, weight_bytes=4 * words.size + tail_bytes.size)

    def flash_bytes(self, sel, node, graph) -> int:
        # the packed words replace the reference kernel's packed weights (the bias is shared): the padding rows
        return max(0, sel.weight_bytes - packed_reference_bytes(node, graph))

    def instructions_saved_by_int16(self, sel) -> int:
        # per k-quad of a block of 4 rows, against 2 LDM of int16 pairs: 4-bit 2 x (LDR, AND, 4 SXTB16), 2-bit
        # LDR, 3 AND, 8 SXTB16; per block the rows from the sums (about 2 per row); the inputs' sum (2 per quad)
        d = sel.ctx
        per_quad = {4: 12 - 2, 2: 12 - 2}[d["bits"]]
        return (d["rows_pad"] // ROWS) * (per_quad * d["quads"] + 2 * ROWS) + 2 * d["quads"]

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop trip counts: unrolled k-quad iterations, the remaining quad, tail inputs, per block."""
        n_in = int(np.prod(info["in"]))
        n_out = int(np.prod(info["out"]))
        quads, tail = divmod(n_in, QUAD)
        blocks = -(-n_out // ROWS)
        return next(iter(self.cost_kinds)), {"loops": blocks * (quads // UNROLL), "rem": blocks * (quads % UNROLL),
                                             "tail": blocks * tail, "blocks": blocks, "outputs": n_out, "const": 1}

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"w{info.get('wbits', 4)}", f"rq-{info.get('rq') or 'none'}"]


VARIANTS = (DensePacked(),)
