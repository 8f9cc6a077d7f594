"""The int8 GEMM whose blocks of pixels share each widening of a channel pair's weights
(kernels/conv2d_gemm_int8.py ``conv2d_gemm_int8_shared``, templates/cortexm/ops_dsp/conv2d_gemm.c.j2 with
``nblocks``): its weight stream is conv2d_gemm_int8's with zero weights padding K to whole loops, it takes
exactly the layers whose estimate gains, and random TFLite chains that select it (pointwise and 3x3 layers,
dilation, stride 2, per-tensor and per-channel requantization, RELU/RELU6 clamps, pixel counts that leave
partial steps and blocks) are bit-exact on the emulated Cortex-M4 and M7, under any optimization level and
with a frame pointer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import conv2d_gemm_int8 as g8
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from helpers.codes import input_codes
from helpers.planned import planned_graph
from helpers.compile_levels import disassembly_at_every_level
from test_kernels_dsp import BOARDS, Chain, _check

SHARED = "conv2d_gemm_int8_shared"


def chain_shared(seed: int) -> bytes:
    """conv 3x3 from 5 channels to 32 or 40 -> 1x1 stride 1 or 2 to 16 (per-channel or per-tensor) -> conv 1x3
    with dilation 2 (im2col per tap) to 8 or 10 -> dense; the GEMM layers' K is 16 to 24 k-pairs, where three
    blocks share."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 12)), int(rng.integers(4, 12))
    ch = Chain(rng, (h, w, 5), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([32, 40])), 3)
    ch.conv(16, 1, stride=int(rng.choice([1, 2])), per_channel=bool(rng.integers(0, 2)))
    ch.conv(int(rng.choice([8, 10])), (1, 3), dilation=2)
    return ch.dense(int(rng.choice([5, 7]))).build()


def test_stream_is_the_int8_stream_padded(tmp_path):
    """Per channel pair: the biases and k-pair words of conv2d_gemm_int8, zero words up to the padded K, then the
    requantization records of both channels (per-tensor ones repeated); the passes' step counts and the blocks
    follow from K alone."""
    reg = kernel_registry.registry()
    shared, plain = reg.get(SHARED), reg.get("conv2d_gemm_int8")
    seen = 0
    for seed in range(4):
        graph, plan = planned_graph(chain_shared(seed), tmp_path)
        for node in graph.nodes:
            if node.op != "conv2d" or shared.refusal(node, graph, plan) is not None:
                continue
            s, p = shared.select(node, graph, plan), plain.select(node, graph, plan)
            d = s.ctx
            kw, kpad, pairs = d["kwords"], d["kpad"], d["oc_pad"] // 2
            assert kpad % d["unroll"] == 0 and kw <= kpad < kw + d["unroll"]
            assert d["nblocks"] == g8.shared_blocks(kw, d["npix"]) >= 2
            assert d["scratch_bytes"] == 4 * g8.SHARED_COL_STRIDE * kpad * d["nblocks"] <= g8.SHARED_COL_BYTES
            a, b = np.array(d["w_words"]).reshape(pairs, -1), np.array(p.ctx["w_words"]).reshape(pairs, -1)
            assert a.shape[1] == 2 + kpad + 6
            assert np.array_equal(a[:, :2 + kw], b[:, :2 + kw]) and not a[:, 2 + kw:2 + kpad].any()
            rec = b[:, 2 + kw:] if p.ctx["fast_pc"] else np.tile(p.ctx["frec"][:3] * 2, (pairs, 1))
            assert np.array_equal(a[:, 2 + kpad:], rec)
            assert s.weight_bytes == 4 * a.size and "weights widened once per" in s.describe()
            seen += 1
    assert seen >= 4


def test_blocks_share_only_where_the_estimate_gains():
    """No sharing for short K (the padding and the passes' setup cost more than the widening saves) nor where two
    blocks' im2col arrays exceed SHARED_COL_BYTES; three blocks where they fit."""
    assert [g8.shared_blocks(k, 1000) for k in (2, 4, 8, 12)] == [1, 1, 1, 1]
    assert g8.shared_blocks(32, 1000) == 3 and g8.shared_blocks(20, 1000) == 3
    assert g8.shared_blocks(48, 1000) == 2           # three blocks' arrays: 2,880 B
    assert g8.shared_blocks(288, 1000) == 1          # ResNet-8's 64-channel 3x3: 11,520 B for two
    assert g8.shared_blocks(40, 6) == 2 and g8.shared_blocks(40, 3) == 1  # as many blocks as the layer has
    for k in range(16, 52):
        nb = g8.shared_blocks(k, 1000)
        if nb > 1:
            assert g8.shared_estimate(k, nb) < g8.plain_estimate(k, nb)


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_chains_bit_exact(seed, target, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"s{seed}.tflite"
    model.write_bytes(chain_shared(seed))
    out = tmp_path / "b"
    build(model, target, BOARDS[target], out, optimize="size")
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")}, weights="int8")
    variants = json.loads((out / "manifest.json").read_text())["kernel_variants"]
    assert list(variants.values()).count(SHARED) == 3, variants
    src = (out / "src" / "model.c").read_text()
    assert "strd %[wa], %[wb], [%[xp]], #8" in src and "ldrd %[wa], %[wb], [%[xw]], #20" in src


def test_compiles_with_any_optimization_and_a_frame_pointer(tmp_path):
    """The passes need 13 registers (r8-r12 fixed for the LDM): r7 stays free for a frame pointer; -O0 gets the
    reference kernels."""
    from edgekit.api import build

    model = tmp_path / "s.tflite"
    model.write_bytes(chain_shared(1))
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize="size")
    assert SHARED in json.loads((out / "manifest.json").read_text())["kernel_variants"].values()
    for flags, dis in disassembly_at_every_level(out, tmp_path).items():
        assert ("strd" in dis and "smmlar" in dis) == (flags != ("-O0",)), flags


def chain_fused(seed: int) -> bytes:
    """conv 3x3 from 5 channels to 32 (shared blocks) row-fused into a 3x3 stride-2 conv (ir/planner.py: its
    output is a ring of rows, a step of blocks may wrap around the ring's end and go through tail[])."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(10, 19)), int(rng.integers(9, 17))
    ch = Chain(rng, (h, w, 5), zp=int(rng.integers(-60, 60)))
    ch.conv(32, 3).conv(16, 3, stride=2).conv(8, 3)
    return ch.dense(5).build()


@pytest.mark.parametrize("seed", [0, 3])
def test_row_fused_producer_bit_exact(seed, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"f{seed}.tflite"
    model.write_bytes(chain_fused(seed))
    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out, optimize="size")
    variants = res.manifest.kernel_variants
    fused = res.manifest.memory_plan["fused"]
    assert any(variants[f["producer"]] == SHARED for f in fused), (variants, fused)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 24, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")}, weights="int8")


def test_size_keeps_the_shared_layers_full_records(tmp_path):
    """--optimize size gives conv2d_gemm's layers of at least COMPACT_RECORD_MIN_KWORDS k-pairs compact
    requantization records; the shared variant's assembly reads full records, so its layers keep them (the
    VWW stand-in failed to compile: an unused Ahi table, and a stream the passes would misread)."""
    from edgekit.api import build
    from edgekit.backends.cortexm.kernels.common import COMPACT_RECORD_MIN_KWORDS

    rng = np.random.default_rng(3)
    ch = Chain(rng, (6, 7, 64), zp=-5)
    ch.conv(32, 1)                                   # K = 32 k-pairs
    ch.conv(16, 1, per_channel=True)
    model = tmp_path / "k.tflite"
    model.write_bytes(ch.dense(5).build())
    graph, plan = planned_graph(model.read_bytes(), tmp_path)
    shared = kernel_registry.registry().get(SHARED)
    node = graph.nodes[0]
    assert shared.refusal(node, graph, plan) is None
    assert shared.select(node, graph, plan).ctx["kwords"] >= COMPACT_RECORD_MIN_KWORDS
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize="size")
    layers = json.loads((out / "manifest.json").read_text())["layers"]
    assert SHARED in layers[0]["kernel"] and "compact" not in layers[0]["kernel"], layers[0]["kernel"]
    from edgekit.api import verify

    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(0), t.shape, 8, t.zero_point, 10), stages=("host", "qemu"))
    assert rep.ok, rep.table()


def test_fused_add_reads_its_rescaled_residual_from_a_table(tmp_path):
    """A fused residual add of 8-bit codes whose rescaling is the one-multiply form (or the reference one): the 256
    rescaled values as a table (kernels/conv2d_gemm.py residual_table), each the contract's requantization of
    the code minus the zero point; epilogue.j2 adds the table's entry instead of computing it."""
    from test_kernels_dsp import chain_b

    from edgekit.ir import contract

    reg = kernel_registry.registry()
    seen = 0
    for seed in (2, 3):
        graph, plan = planned_graph(chain_b(seed), tmp_path)
        for node in graph.nodes:
            if node.op != "conv2d" or not node.attrs.get("residual"):
                continue
            for name in ("conv2d_gemm", "conv2d_gemm_int8"):
                d = reg.get(name).select(node, graph, plan).ctx
                r = graph.tensors[node.inputs[3]]
                codes = np.arange(-128, 128) if r.dtype == "int8" else np.arange(0, 256)
                want = contract.apply_requant(codes - r.zero_point, node.attrs["residual"]["in_requant"][1])
                assert d["res_table"] == [int(v) for v in want] and d["res_table_offset"] == -int(codes[0])
                seen += 1
    assert seen >= 2
