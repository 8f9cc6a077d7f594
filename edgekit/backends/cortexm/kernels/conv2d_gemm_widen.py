"""DSP GEMM for convolutions with int8 weights in flash, run at the int16 kernel's speed: per call, the int8 weight
stream of a group of output channel pairs is widened once (SXTB16, SXTB16 ROR #8) into int16 pairs in a free arena
gap at the node, then conv2d_gemm's im2col and 3 pixel x 2 channel micro-kernel run over every pixel block with one
LDRD per k-pair step (8 instructions per step against conv2d_gemm_int8's 10). A convolution reuses each weight for
every output pixel, so the widening (about 4 instructions per 4 weights) is paid once per call instead of once per
block. Where the gap holds only some channel pairs, the layer runs in several groups and each group recomputes the
im2col of every block (templates/cortexm/ops_dsp/conv2d_gemm.c.j2 with ``widen``; docs/kernels.md)."""
from __future__ import annotations

from .common import in_place
from .conv2d_gemm import (GEMM_PIXELS, IM2COL1_ROW, IM2COL1_TAP, IM2COL1_WORD, IM2COL3_BLOCK, IM2COL3_ROW,
                          IM2COL3_WORD, ConvGemm, asm_requant, im2col_features)
from .conv2d_gemm_int8 import ConvGemmInt8, shared_blocks, shared_steps
from .registry import arena_gap

#: estimated instructions of the widening: per int8 weight word (half an LDRD, two SXTB16, half an STRD, a quarter of
#: the loop; two more with the doubling SADD16s), per channel pair (biases and requantization records copied, the loop around),
#: per group (its setup)
WIDEN_WORD, WIDEN_WORD_DOUBLED, WIDEN_PAIR, WIDEN_GROUP = 4, 6, 30, 30
#: the micro-kernel's instructions per k-pair step: int16 pairs from RAM (LDM, LDRD, six SMLAD) and int8 from flash
#: (LDM, LDR, two SXTB16, six SMLAD)
STEP_INT16, STEP_INT8 = 8, 10
#: taken where its estimate (steps, widening, recomputed im2col) is below this share of the int8 kernel's
WIDEN_GAIN = 0.97


def _calls(plan, node) -> int:
    """Calls of the layer's function per inference: one per step of a row fusion (the producer skips the steps it
    has nothing to add), else one."""
    fusion = plan.fusion_of(node.name) if plan is not None else None
    if fusion is None:
        return 1
    return len(set(fusion.a_end)) if fusion.producer == node.name else len(fusion.a_end)


def im2col_block_estimate(d: dict) -> float:
    """Instructions of one block's im2col (ek_im2col3 where the layer takes it, else the pixel-by-pixel copy): what
    each group after the first pays again per block (conv2d_gemm.py's im2col estimates)."""
    g = d["g"]
    words = g["kw"] * g["ic"] // 4
    if d.get("im2col3"):
        return IM2COL3_BLOCK + g["kh"] * (IM2COL3_ROW + IM2COL3_WORD * words)
    taps = g["kw"] if g["ic"] % 4 == 0 else 0
    return GEMM_PIXELS * g["kh"] * (IM2COL1_ROW + IM2COL1_TAP * taps + IM2COL1_WORD * words)


def int8_step_cost(d: dict, node, graph) -> float:
    """Instructions per k-pair step of the kernel the layer would run without widening: conv2d_gemm_int8's, or
    conv2d_gemm_int8_shared's average where that one takes the layer."""
    kw = d["kwords"]
    nb = shared_blocks(kw, d["npix"])
    if nb > 1 and asm_requant(d, node, graph, records_in_stream=False):
        # block 0's steps widen (11), the others' load the widened pair (8), over K padded to whole loops
        return (11 + 8 * (nb - 1)) * shared_steps(kw)[1] / (nb * kw)
    return STEP_INT8


def widen_plan(d: dict, node, graph, plan, index: int) -> dict | None:
    """The groups of channel pairs the layer is widened in and the estimate, for the largest group whose int16
    stream and im2col block fit a free arena gap at node ``index`` (groups balanced: as few as that needs, of equal
    size); None where no gap holds one channel pair."""
    pairs = d["oc_pad"] // 2
    kw = d["kwords"]
    tail = len(d["w_words"]) // pairs - 2 - kw                   # requantization record words per pair
    pair_words = 2 + 2 * kw + tail
    col = 4 * GEMM_PIXELS * kw
    most = next((gp for gp in range(pairs, 0, -1) if arena_gap(plan, index, col + 4 * gp * pair_words) is not None), 0)
    if not most:
        return None
    groups = -(-pairs // most)
    gp = -(-pairs // groups)
    calls = _calls(plan, node)
    blocks = -(-d["npix"] // GEMM_PIXELS)
    steps = blocks * pairs * kw
    outputs = d["npix"] * d["g"]["oc"]
    # the accumulators doubled while widening (SADD16: no LSL per output in the SMMLAR epilogue) where that saves more
    # than the two SADD16 per word cost
    double = bool(d.get("smmlar")) and outputs > (WIDEN_WORD_DOUBLED - WIDEN_WORD) * calls * pairs * kw
    widen = calls * (pairs * ((WIDEN_WORD_DOUBLED if double else WIDEN_WORD) * kw + WIDEN_PAIR) + groups * WIDEN_GROUP)
    again = (groups - 1) * blocks * im2col_block_estimate(d)
    return {"pairs": gp, "groups": groups, "pair_words": pair_words, "tail": tail, "col_bytes": col,
            "bytes": col + 4 * gp * pair_words, "double": double, "calls": calls,
            "cost": int(widen + again), "int8": int(int8_step_cost(d, node, graph) * steps),
            "int16": int(STEP_INT16 * steps - (outputs if double else 0))}


class ConvGemmWiden(ConvGemmInt8):
    """conv2d_gemm_int8's weight stream in flash, widened per call into a free arena gap (groups of channel pairs
    that fit it), then the int16 micro-kernel. Balanced only: it adds no constants, but it holds arena bytes while
    it runs and a widening loop of code; --optimize size keeps conv2d_gemm_int8's smaller code and no RAM use, and
    speed has the weights at int16 in flash already."""
    name = "conv2d_gemm_widen"
    # before conv2d_gemm_int8_shared and conv2d_gemm_int8 (which take what this one refuses)
    priority = 9.7
    modes = frozenset({"balanced"})
    weight_form = "int8 weights widened per call"
    cost_kinds = {"gemm_widen": ConvGemm.cost_kinds["gemm"] + ("widen_words",)}
    cost_reduced = {"gemm_widen": ConvGemm.cost_reduced["gemm"] + ("widen_words",)}
    cost_work = {"gemm_widen": ConvGemm.cost_work["gemm"]}

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)
        if why:
            return why
        if plan is None:
            return "no memory plan (the widened weights go in a free arena gap)"
        index = [n.name for n in graph.nodes].index(node.name)
        d = ConvGemmInt8.select(self, node, graph, plan).ctx
        w = widen_plan(d, node, graph, plan, index)
        # no gap: the layer keeps its int8 kernel, as dw3_int8_ram does (only ever free RAM: no fallback)
        if w is None:
            return "no free arena gap holds one channel pair's widened weights and an im2col block"
        if w["groups"] > 1 and in_place(plan, node.inputs[0], node.outputs[0]):
            return "in place over its input: a second group of channels would read overwritten pixels"
        if w["int16"] + w["cost"] >= WIDEN_GAIN * w["int8"]:
            return (f"no gain estimated: {w['groups']} group(s), widening and im2col again "
                    f"{w['cost']} instructions against {w['int8'] - w['int16']} saved")
        return None

    def select(self, node, graph, plan):
        sel = super().select(node, graph, plan)
        d = sel.ctx
        index = [n.name for n in graph.nodes].index(node.name)
        w = widen_plan(d, node, graph, plan, index)
        # the micro-kernel reads the widened int16 pairs (LDRD): int8_weights is the flash stream's form only
        d.update(widen=w, scratch_bytes=w["bytes"], acc_doubled=w["double"], int8_weights=False,
                 summary=d["summary"].replace(self.weight_form, f"{self.weight_form} into {w['bytes']} B of free arena "
                                              f"at {arena_gap(plan, index, w['bytes'])} ({w['groups']} group(s) of "
                                              f"{2 * w['pairs']} channels" + (", doubled)" if w["double"] else ")"), 1))
        return sel

    def instructions_saved_by_int16(self, sel) -> int:
        # int16 weights in flash run the same micro-kernel without the widening and the repeated im2col
        return sel.ctx["widen"]["cost"]

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """conv2d_gemm's features with int8 weights' loops, and the weight words widened (one call, one group: the
        gap and a row fusion are not in a layer's shape)."""
        _, f = ConvGemmInt8.cost_features(self, info)
        kwords = im2col_features(info)[1]
        return self.cost_kind, {**f, "widen_words": -(-info["out"][2] // 2) * kwords}


VARIANTS = (ConvGemmWiden(),)


def persist_in_row_fusions(plan, selections: dict) -> None:
    """A row-fused layer of this variant in one group widens its weights on its first call only (``widen.persist``:
    the calls of an inference continue the same pass over the pixels) where the other layer of its fusion, the only
    code that runs between its calls, never writes the widened weights' bytes (its scratch lies elsewhere or on the
    stack; the planner keeps every tensor live during the fusion out of both layers' gaps). codegen calls it once
    the selections and their scratch are final."""
    for f in getattr(plan, "fused", ()):
        for me, other in ((f.producer, f.consumer), (f.consumer, f.producer)):
            s, o = selections[me], selections[other]
            w = s.ctx.get("widen") if s.optimized and s.kind == ConvGemmWiden.name else None
            if not w or w["groups"] != 1 or s.scratch is None:
                continue
            lo, hi = s.scratch + w["col_bytes"], s.scratch + w["bytes"]
            need = o.ctx.get("scratch_bytes", 0) if o.optimized else 0
            if need and o.scratch is not None and o.scratch < hi and lo < o.scratch + need:
                continue
            w["persist"] = True
            s.ctx["summary"] += ", widened on the first step of its row fusion only"
            # widened once: doubling pays where the layer has more outputs than the SADD16s cost (widen_plan's rule)
            d = s.ctx
            if d.get("smmlar") and not w["double"] and \
                    d["npix"] * d["g"]["oc"] > (WIDEN_WORD_DOUBLED - WIDEN_WORD) * (d["oc_pad"] // 2) * d["kwords"]:
                w["double"] = d["acc_doubled"] = True
                d["summary"] = d["summary"].replace(" channels)", " channels, doubled)", 1)
