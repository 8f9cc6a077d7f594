"""Helium (MVE) GEMM with 4- or 2-bit weights packed in flash (Cortex-M55): mve_gemm's im2col and passes of
four output channels, but each 16-byte weight vector holds 16 taps of two rows (4-bit) or of all four
rows (2-bit) of a pass (templates/cortexm/ops_mve/gemm_packed.c.j2, docs/kernels.md).

The rows are the sets of each byte (kernels/packing_dsp.py), the top one in two's complement, the lower
ones in offset binary, as dense_packed lays them: ``VMLADAVA.S8`` of the input vector with the weight
vector itself and with the vector AND ``low_mask(s)`` gives sums S_s from which the rows follow exactly
(row 0 = (S_0 - S_1) >> (8 - bits), row s = ((S_s - S_s+1) >> (8 - (s + 1) bits)) - 2^(bits - 1) sum(x),
the last row S_last - 2^(bits - 1) sum(x), modulo 2^32): one AND per row after a vector's first, the same
number of VMLADAVA as with int8 weights and half (4-bit) or a quarter (2-bit) of the weight loads. The
inputs' sum is taken once per pixel (per layer for dense) over the same vectors."""
from __future__ import annotations

import numpy as np

from .common import accumulator_bounds
from .mve_gemm import LANES, ROWS, MveDense, MveGemm, vectors
from .packing_dsp import (BITS, low_mask, offset_of, packed_reference_bytes, range_refusal, scaled_bound_refusal,
                          set_bytes, sets_per_word, weight_bits)


class _Packed:
    """Mixed in before MveGemm / MveDense: their bias, im2col and epilogue, packed weight vectors."""

    priority = 41
    template = "ops_mve/gemm_packed.c.j2"
    modes = frozenset({"size", "balanced"})
    row_ranges = False
    # a layer with 4- or 2-bit weights that this variant refuses loses its packing: listed as a fallback
    refusals_are_fallbacks = True

    def applies(self, node, graph) -> bool:
        return weight_bits(node, graph) in BITS

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)  # type: ignore[misc]
        if why:
            return why
        bits = weight_bits(node, graph)
        w = graph.constants[node.inputs[1]]
        why = range_refusal(w, bits)
        if why:
            return why
        flat = w.reshape(w.shape[0], -1)
        kp = vectors(flat.shape[1]) * LANES
        # int8 inputs (uint8 flipped): the rows' products plus the offset times the inputs' sum, scaled
        bound = accumulator_bounds(np.zeros(flat.shape[0], np.int64), flat, "int8", 0).max(initial=0)
        return scaled_bound_refusal(bound + offset_of(bits) * kp * 128, bits)

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)  # type: ignore[misc]
        d = sel.ctx
        bits = weight_bits(node, graph)
        sets = sets_per_word(bits)
        w = graph.constants[node.inputs[1]].astype(np.int64)
        oc, kp, ocp = d["oc"], d["kp"], d["ocp"]
        wp = np.zeros((ocp, kp), np.int64)
        wp[:oc, :d["k"]] = w.reshape(oc, -1)
        # per pass of 4 rows and vector of 16 taps: ROWS // sets vectors, row r as set r % sets of vector r // sets
        g = wp.reshape(ocp // ROWS, ROWS // sets, sets, kp // LANES, LANES).transpose(0, 3, 1, 4, 2)
        packed = set_bytes(g, bits, offset=True)                     # (passes, k / 16, vectors, 16)
        old = len(d["w_bytes"])
        d["w_bytes"] = [v - 256 if v >= 128 else v for v in packed.reshape(-1).tolist()]
        d.update({"bits": bits, "sets": sets, "vecs": ROWS // sets, "offset": offset_of(bits),
                  "low_masks": [low_mask(bits, s) & 0xFF for s in range(sets)],
                  "shifts": [8 - (s + 1) * bits for s in range(sets)]})
        d["summary"] = d["summary"].replace("VMLADAVA.S8 steps", f"VMLADAVA.S8 steps, {bits}-bit weights packed "
                                                                f"{sets} per byte (VAND)")
        sel.template = self.template
        sel.kind = self.name
        sel.weight_bytes += len(d["w_bytes"]) - old
        return sel

    def flash_bytes(self, sel, node, graph) -> int:
        # the packed vectors replace the reference kernel's packed weights and the layer's bias
        return max(0, sel.weight_bytes - packed_reference_bytes(node, graph) - graph.constants[node.inputs[2]].nbytes)

    def cost_features(self, info: dict) -> tuple[str, dict]:
        _, f = super().cost_features(info)  # type: ignore[misc]
        return next(iter(self.cost_kinds)), f

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        return [f"w{info.get('wbits', 4)}", f"rq-{info.get('rq') or 'none'}"]


class MveGemmPacked(_Packed, MveGemm):
    name = "mve_gemm_packed"
    cost_kinds = {"mve_gemm_packed": MveGemm.cost_kinds["mve_gemm"]}
    cost_reduced = {"mve_gemm_packed": MveGemm.cost_reduced["mve_gemm"]}
    cost_work = {"mve_gemm_packed": MveGemm.cost_work["mve_gemm"]}


class MveDensePacked(_Packed, MveDense):
    name = "mve_dense_packed"
    cost_kinds = {"mve_dense_packed": MveDense.cost_kinds["mve_dense"]}
    cost_reduced = {"mve_dense_packed": MveDense.cost_reduced["mve_dense"]}
    cost_work = {"mve_dense_packed": MveDense.cost_work["mve_dense"]}


VARIANTS = (MveGemmPacked(), MveDensePacked())
