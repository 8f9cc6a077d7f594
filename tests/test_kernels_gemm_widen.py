"""The int8 GEMM whose weights are widened once per call into free arena bytes (kernels/conv2d_gemm_widen.py
``conv2d_gemm_widen``, templates/cortexm/ops_dsp/conv2d_gemm.c.j2 with ``widen``): it takes a layer in one group
of channel pairs where the gap holds them all, in several where it holds some, refuses where no gap holds one
pair, where a second group would read an input it overwrote, or where no gain is estimated (the int8 kernels take
those, and none is a fallback); random TFLite chains that select it (residual block, stride 2, 3x3 and 1x1 layers,
per-tensor and per-channel requantization, RELU/RELU6 clamps, compact requantization records) are bit-exact on the
emulated Cortex-M4 and M7."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.backends.cortexm import build as cortexm_build
from edgekit.backends.cortexm.kernels import conv2d_gemm_widen as gw
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from helpers.codes import input_codes
from test_kernels_dsp import BOARDS, Chain, _check

WIDEN = "conv2d_gemm_widen"


def chain_widen(seed: int) -> bytes:
    """conv 3x3 16 -> 16 -> 16 with a residual add (the arena's peak) -> conv 3x3 stride 2 to 6 or 8 channels -> conv 3x3
    to 48 or 64 (a gap for some of its channel pairs: several groups) -> 1x1 to 16 or 24 (a gap for all: one group,
    or in place over its input) -> dense."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(12, 17)), int(rng.integers(12, 17))
    ch = Chain(rng, (h, w, 16), zp=int(rng.integers(-60, 60)))
    ch.conv(16, 3)
    skip = (ch.x, ch.scale, ch.zp)
    ch.conv(16, 3).add_to(skip)
    ch.conv(int(rng.choice([6, 8])), 3, stride=2, per_channel=bool(rng.integers(0, 2)))
    ch.conv(int(rng.choice([48, 64])), 3)
    ch.conv(int(rng.choice([16, 24])), 1)
    return ch.dense(int(rng.choice([5, 7]))).build()


def _graph(model: bytes, tmp_path):
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    path = tmp_path / "m.tflite"
    path.write_bytes(model)
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    return graph, plan_memory(graph)


def test_groups_fit_the_gap_and_refusals(tmp_path):
    """Each selection's widened groups and im2col block fit a free arena gap at the node and never raise the arena;
    the groups are as few as the gap allows, of equal size; seed 0 takes one group and several, seed 2 several and
    refuses the in-place 1x1; the layers before the stride-2 conv (the arena's peak) have no gap."""
    from edgekit.backends.cortexm.codegen import _select_kernels
    from edgekit.targets import resolve

    _, board = resolve("cortex-m4", "mps2-an386")
    reg = kernel_registry.registry()
    v = reg.get(WIDEN)
    seen = {"one": 0, "several": 0, "no gap": 0, "in place": 0}
    for seed in (0, 2):
        graph, plan = _graph(chain_widen(seed), tmp_path)
        names = [n.name for n in graph.nodes]
        sel = _select_kernels(graph, plan, "optimized", ("dsp",), board, "balanced", 0)
        for i, node in enumerate(graph.nodes):
            if node.op != "conv2d":
                continue
            why = v.refusal(node, graph, plan)
            s = sel[node.name]
            if why is None:
                assert s.kind == WIDEN, (node.name, s.kind)
                w = s.ctx["widen"]
                pairs = s.ctx["oc_pad"] // 2
                assert w["groups"] == -(-pairs // w["pairs"]) and w["pairs"] * (w["groups"] - 1) < pairs
                assert s.scratch is not None and s.scratch + w["bytes"] <= plan.arena_bytes
                assert w["bytes"] == w["col_bytes"] + 4 * w["pairs"] * w["pair_words"]
                assert kernel_registry.arena_gap(plan, i, w["bytes"]) == s.scratch
                if w["groups"] > 1:  # the whole layer's widened weights fit no gap
                    assert kernel_registry.arena_gap(plan, i, w["col_bytes"] + 4 * pairs * w["pair_words"]) is None
                assert not s.ctx["int8_weights"] and f"{w['groups']} group(s)" in s.describe()
                seen["one" if w["groups"] == 1 else "several"] += 1
            else:
                assert s.kind != WIDEN and not s.ctx.get("fallback"), (node.name, s.kind, s.ctx.get("fallback"))
                if why.startswith("no free arena gap"):
                    seen["no gap"] += 1
                    assert names.index(node.name) < 3
                elif why.startswith("in place"):
                    seen["in place"] += 1
    assert all(seen.values()), seen


def test_no_gain_estimated_for_many_groups(monkeypatch):
    """The estimate: int16 steps plus widening plus the im2col again per extra group, against the int8 kernel's steps."""
    d = {"oc_pad": 64, "kwords": 288, "npix": 64, "w_words": [0] * (32 * (2 + 288 + 6)), "smmlar": True,
         "g": {"kh": 3, "kw": 3, "ic": 64, "oc": 64}, "im2col3": True}

    class Plan:
        def __init__(self, gap):
            self.gap, self.fused = gap, []

        def fusion_of(self, name):
            return None

    class Node:
        name, attrs = "n", {}

    monkeypatch.setattr(gw, "arena_gap", lambda plan, index, size: 0 if size <= plan.gap else None)
    for gap, groups in ((10**6, 1), (3456 + 4 * 4 * 584, 8), (3456 + 4 * 584, 32)):
        w = gw.widen_plan(d, Node(), None, Plan(gap), 0)
        assert w["groups"] == groups and w["pair_words"] == 2 + 2 * 288 + 6
        steps = 22 * 32 * 288
        assert w["int8"] == gw.STEP_INT8 * steps
        if groups == 1:
            assert w["int16"] + w["cost"] < gw.WIDEN_GAIN * w["int8"]
        if groups == 32:
            assert w["int16"] + w["cost"] >= gw.WIDEN_GAIN * w["int8"]


def _build_balanced_int8(model, target, out, monkeypatch, compact=False):
    """A balanced build whose layers keep int8 weights in flash (no allowance for int16: the flash goal out of reach,
    so the first build stays), optionally with the lean layouts' compact requantization records."""
    from edgekit.api import build

    monkeypatch.setattr(kernel_registry, "BALANCED_EXTRA_FLASH", 0.0)
    monkeypatch.setattr(kernel_registry, "FLASH_GOAL_CODE", -10**7)
    if compact:
        generate = cortexm_build.generate_c

        def compact_generate(*args, **kwargs):
            kwargs.update(compact_records=True, lean=True)  # compact records on every int8 GEMM (the flash goal's)
            return generate(*args, **kwargs)

        monkeypatch.setattr(cortexm_build, "generate_c", compact_generate)
    return build(model, target, BOARDS[target], out, optimize="balanced")


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("seed,compact", [(0, False), (2, False), (4, True), (5, False)])
def test_random_chains_bit_exact(seed, compact, target, tmp_path, monkeypatch):
    from edgekit.api import verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"w{seed}.tflite"
    model.write_bytes(chain_widen(seed))
    out = tmp_path / "b"
    res = _build_balanced_int8(model, target, out, monkeypatch, compact)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")})
    manifest = json.loads((out / "manifest.json").read_text())
    kernels = {r["name"]: r.get("kernel", "") for r in manifest["layers"]}
    widened = [k for k in kernels.values() if k.startswith(f"optimized {WIDEN}")]
    assert widened, kernels
    assert any(" 1 group(s)" not in k for k in widened) or seed not in (0, 2), widened
    convs = {n.name for n in graph.nodes if n.op == "conv2d"}
    assert not [f for f in manifest["kernel_fallbacks"] if f["layer"] in convs], manifest["kernel_fallbacks"]
    if compact:
        assert any("compact requantization records" in k for k in widened), widened
    src = (out / "src" / "model.c").read_text()
    assert "sxtb16 %[o0], %[v0], ror #8" in src and "ldrd %[wa], %[wb], [%[wp]], #8" in src
    # the widened weights take free arena bytes only: the arena the planner gave the graph before any kernel
    assert res.manifest.arena_bytes == _graph(chain_widen(seed), tmp_path)[1].arena_bytes


def test_compiles_with_any_optimization_and_a_frame_pointer(tmp_path, monkeypatch):
    """The widening's assembly needs 7 registers and the micro-kernel 13 (r7 left to a frame pointer); -O0 gets the
    reference kernels."""
    from helpers.compile_levels import disassembly_at_every_level

    model = tmp_path / "w.tflite"
    model.write_bytes(chain_widen(0))
    out = tmp_path / "b"
    _build_balanced_int8(model, "cortex-m4", out, monkeypatch)
    assert WIDEN in json.loads((out / "manifest.json").read_text())["kernel_variants"].values()
    for flags, dis in disassembly_at_every_level(out, tmp_path).items():
        assert ("sxtb16" in dis and "smlad" in dis) == (flags != ("-O0",)), flags


def test_row_fused_layer_widens_once_where_its_partner_leaves_the_bytes():
    """A row-fused layer in one group widens on the fusion's first step only (``persist``) where the other layer's
    scratch lies outside its widened weights (or on the stack), and then doubles where that pays; several groups, or
    a partner whose scratch overlaps the weights, widen on every call. (ResNet-8's first 3x3 layer persists:
    tests/test_tflite.py verifies the MLPerf model against TFLite Micro's goldens.)"""
    from types import SimpleNamespace

    from edgekit.backends.cortexm.kernels.base import Selection

    def widen_sel(scratch, groups=1):
        w = {"groups": groups, "col_bytes": 864, "bytes": 864 + 8 * 320, "double": False, "pairs": 8}
        ctx = {"widen": w, "smmlar": True, "npix": 1024, "g": {"oc": 16}, "oc_pad": 16, "kwords": 72,
               "acc_doubled": False, "summary": "x (1 group(s) of 16 channels)", "scratch_bytes": w["bytes"]}
        return Selection(WIDEN, ctx=ctx, scratch=scratch)

    def partner(scratch, need):
        return Selection("conv2d_gemm", ctx={"scratch_bytes": need, "summary": ""}, scratch=scratch)

    plan = SimpleNamespace(fused=[SimpleNamespace(producer="a", consumer="b")])
    cases = [(widen_sel(1000), partner(1000, 864), True),        # the partner's col over the producer's col only
             (widen_sel(1000), partner(None, 4000), True),       # on the stack
             (widen_sel(1000), partner(1000, 2000), False),      # over the widened weights
             (widen_sel(1000, groups=2), partner(None, 0), False)]
    for s, o, persists in cases:
        gw.persist_in_row_fusions(plan, {"a": s, "b": o})
        assert bool(s.ctx["widen"].get("persist")) == persists
        assert s.ctx["acc_doubled"] == persists and ("doubled" in s.ctx["summary"]) == persists
