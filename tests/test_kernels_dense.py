"""The generated dense kernels (kernels/dense_asm.py, ops_dsp/dense_asm.c.j2) equal the reference bit for bit.

Random chains of TFLite FULLY_CONNECTED layers (input lengths of every remainder modulo 4, odd row counts,
per-channel and per-tensor weight scales, fused RELU/RELU6 with nonzero zero points) built with int16 weights
(``dense_asm``, speed) and int8 weights in row pairs (``dense_asm_int8``), the input widened once into a
scratch buffer or read word by word per row block, run on the emulated Cortex-M4 and M7 and compared with
the simulator element by element; the refusals that send a layer to the older dense kernels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import dense_asm
from edgekit.bench import peers_dir
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.codes import input_codes

#: input length, then the output length of each layer: remainders 0, 1, 2, 3, 1, 0 of the input lengths
#: modulo 4, row counts that leave 1-3 rows of a last block; 200 inputs loop over k-step groups in every form
#: (entering the loop body part-way)
SIZES = (200, 37, 14, 23, 9, 48, 6)


def fc_chain(seed: int, sizes=SIZES) -> bytes:
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    A = tflite.ActivationFunctionType
    scale, zp = 0.05, int(rng.integers(-30, 30))
    x = inp = b.act((1, sizes[0]), scale, zp)
    for i, (n, n_out) in enumerate(zip(sizes, sizes[1:])):
        per_channel = i % 2 == 0
        w_scale = (0.06 * 35 / (scale * np.sqrt(n) * 40 * 73) * rng.uniform(0.8, 1.2, n_out if per_channel else 1))
        w_scale = w_scale.astype(np.float32)
        wi = b.tensor((n_out, n), "int8", w_scale, np.zeros(w_scale.size, np.int64),
                      rng.integers(-127, 128, (n_out, n)))
        bi = b.tensor((n_out,), "int32", np.resize(np.float32(scale) * w_scale, n_out), np.zeros(n_out, np.int64),
                      rng.integers(-3000, 3000, n_out))
        scale, zp = 0.06, int(rng.integers(-40, 40))
        y = b.act((1, n_out), scale, zp)
        b.op("FULLY_CONNECTED", [x, wi, bi], [y], "FullyConnectedOptions",
             FusedActivationFunction=[A.NONE, A.RELU, A.RELU6][int(rng.integers(0, 3))])
        x = y
    return b.build([inp], [x])


#: (--optimize, how the input reaches the k-steps, board)
CASES = [("speed", "buf", "mps2-an386"), ("speed", "fly", "mps2-an386"), ("size", "buf", "mps2-an386"),
         ("size", "fly", "mps2-an386"), ("balanced", "fly", "mps2-an500")]


@pytest.mark.parametrize("optimize,xsrc,board", CASES)
def test_dense_asm_random_chains_bit_exact(optimize, xsrc, board, tmp_path, monkeypatch):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    if xsrc == "fly":  # no arena gap and no stack buffer: every layer reads its input word by word
        monkeypatch.setattr(dense_asm, "arena_gap", lambda plan, index, size: None)
        monkeypatch.setattr(dense_asm.DenseAsm, "stack_buffer", False)
    else:              # the widened input in an arena gap or (int16 weights) on the stack
        monkeypatch.setattr(dense_asm.DenseAsm, "stack_buffer", True)
        monkeypatch.setattr(dense_asm.DensePairs, "stack_buffer", True)
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_chain(16 + len(optimize)))
    out = tmp_path / "b"
    target = {"mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7"}[board]
    build(model, target, board, out, optimize=optimize)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(3), t.shape, 40, t.zero_point, 10),
                 stages=("host", "qemu"))
    assert rep.ok, rep.table()
    for s in rep.stages:
        if s.stage.startswith(("host", "firmware")):
            assert s.elements > 0 and s.mismatches == 0, rep.table()
    layers = [r for r in json.loads((out / "manifest.json").read_text())["layers"] if r["op"] == "dense"]
    want = "optimized dense_asm:" if optimize == "speed" else "optimized dense_asm_int8:"
    for r in layers:
        # balanced spends its flash allowance on int16 weights where they save most per byte
        widened = optimize == "balanced" and r["kernel"].startswith("optimized dense_asm:") and "(balanced:" in r["kernel"]
        assert r["kernel"].startswith(want) or widened, r["kernel"]
        assert ("widened per block" in r["kernel"]) == (xsrc == "fly"), r["kernel"]
    src = (out / "src" / "model.c").read_text()
    # the pairs' second SMLAD operand, in every layer on int8 weights (balanced may widen them all: v16-flash)
    assert ("sxtb16 r10, r10" in src) == any(r["kernel"].startswith("optimized dense_asm_int8:") for r in layers)
    assert "smmlar" in src and "cmp r0, r" in src                  # SMMLAR epilogue; a looped k-step group


def test_pairs_refusals_and_the_count_model(tmp_path):
    """dense_asm_int8 refuses a weight of -128 over a negative one (the int16 half would leave its range) and a
    second row whose accumulator could reach 2^23 (B is recovered from acc_h - acc_a = 256 B); both layers keep
    dense_int8. The generated program's instruction count is what the build records for the layer."""
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_chain(5, (40, 8, 6)))
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    graph, _ = import_tflite(model)
    run_default_passes(graph)
    plan = plan_memory(graph)
    reg = kernel_registry.registry()
    pairs = reg.get("dense_asm_int8")
    node = next(n for n in graph.nodes if n.op == "dense")
    assert pairs.refusal(node, graph, plan) is None
    w = graph.constants[node.inputs[1]]
    bad = w.copy()
    bad[0, 3], bad[1, 3] = -5, -128
    graph.constants[node.inputs[1]] = bad
    assert "-128" in pairs.refusal(node, graph, plan)
    assert reg.get("dense_asm").refusal(node, graph, plan) is None   # int16 halves hold -256 (doubled -128)
    assert reg.select(node, graph, plan, ("dsp",), "optimized", "balanced").kind == "dense_int8"
    bias = graph.constants[node.inputs[2]]
    big = bias.copy()
    big[1] = 2**23
    graph.constants[node.inputs[1]], graph.constants[node.inputs[2]] = w, big
    assert "2^23" in pairs.refusal(node, graph, plan)
    graph.constants[node.inputs[2]] = bias
    sel = pairs.select(node, graph, plan)
    assert sel.ctx["instructions"] > sel.ctx["instructions_int16"] > 0
    assert pairs.instructions_saved_by_int16(sel) == sel.ctx["instructions"] - sel.ctx["instructions_int16"]


def test_generated_program_counts_and_stream_layout():
    """The stream holds one word per k-pair and row (int16) or row pair (int8 pairs), plus the initial
    accumulators and the requantization constants the statement loads; the int8 pairs' words unpack to the
    weights: SXTB16 of a half gives row a's weight, (half - a) / 256 row b's."""
    rng = np.random.default_rng(0)
    n_out, n_in = 11, 23
    w = rng.integers(-127, 128, (n_out, n_in))
    bias = rng.integers(-1000, 1000, n_out)
    kp = dense_asm.kpairs(n_in)
    assert sorted(i for p in kp for i in p if i >= 0) == list(range(n_in))
    consts = {"m": [2**30 + 7], "k": [5], "e": [6]}
    for xsrc in ("buf", "fly"):
        prog = dense_asm.generate(True, xsrc, "sxtb16", n_in, n_out, 6, 8, True, -128, 127)
        stream, ends = dense_asm.DensePairs().stream(prog, kp, w, bias, consts)
        assert ends[-1] == len(stream)
        # 11 rows: one block over rows 7-10, then blocks from rows 0 and 4 (rows 7 computed twice)
        assert prog.rows == 4 and prog.passes == [(7, 1), (0, 2)]
        # 2 row pairs per block of 4 rows: 4 initial words, then one word per k-pair and pair (the second pass)
        start = ends[2]
        words = np.array(stream[start + 4:start + 4 + 2 * len(kp)], np.int64) & 0xFFFFFFFF
        got = np.zeros((4, n_in), np.int64)
        tok = [t for t in prog.tokens if t[0] == "w"]
        for word, (_, j, u) in zip(words, tok):
            for half, idx in zip((word & 0xFFFF, word >> 16), kp[j]):
                h = half - 65536 if half >= 32768 else half
                a = ((h & 0xFF) ^ 0x80) - 0x80
                if idx >= 0:
                    got[2 * u, idx], got[2 * u + 1, idx] = a, (h - a) // 256
        assert np.array_equal(got, w[:4])
        s16 = dense_asm.generate(False, xsrc, "sxtb16", n_in, n_out, 6, 8, True, -128, 127)
        assert s16.instructions < prog.instructions


def test_speed_says_when_the_input_is_read_per_block_for_lack_of_ram(tmp_path, monkeypatch):
    """No silent degradation: under speed a layer whose widened input fits neither a free arena gap nor the
    stack budget reads its input per block, and the build's fallbacks name it and why."""
    from edgekit.backends.cortexm.codegen import kernel_fallbacks
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_chain(5, (40, 8, 6)))
    graph, _ = import_tflite(model)
    run_default_passes(graph)
    plan = plan_memory(graph)
    reg = kernel_registry.registry()
    sel = {n.name: reg.select(n, graph, plan, ("dsp",), "optimized", "speed") for n in graph.nodes}
    assert all(s.kind == "dense_asm" and "fallback" not in s.ctx for s in sel.values())
    monkeypatch.setattr(dense_asm, "arena_gap", lambda plan, index, size: None)
    monkeypatch.setattr(dense_asm, "STACK_SCRATCH_LIMIT", 0)
    sel = {n.name: reg.select(n, graph, plan, ("dsp",), "optimized", "speed") for n in graph.nodes}
    assert all(s.ctx["xsrc"] == "fly" for s in sel.values())
    listed = kernel_fallbacks(graph, sel)
    assert [f["layer"] for f in listed] == [n.name for n in graph.nodes if n.op == "dense"]
    assert all("stack budget" in f["reason"] for f in listed)


#: input lengths of every remainder modulo 4 and 1, 2, 5 and 50 input words (no widening loop, one
#: straight pair of words, a loop of 2 words and an odd one, a long loop)
IN_PLACE_SIZES = (203, 42, 9, 23, 5, 6)


def test_speed_widens_the_input_in_place_bit_exact(tmp_path, monkeypatch):
    """--optimize speed: a dense layer whose int16 input pairs find no free arena gap writes them over its own
    dying input, from the last input word down, in arena bytes the planner pinned at the input's offset
    (ir/planner.py scratch_over_input) instead of on the stack. Forced on every layer here (no other gap, and
    the arena growth always accepted), over inputs of every remainder modulo 4: bit-exact on the M4."""
    from edgekit.api import build, verify
    from edgekit.backends.cortexm import build as cortexm_build
    from edgekit.ir.graph import Graph

    reserved_only = lambda plan, index, size: (plan.scratch[index][0]  # noqa: E731
                                               if plan.scratch.get(index, (0, 0))[1] >= size else None)
    monkeypatch.setattr(dense_asm, "arena_gap", reserved_only)
    requests = cortexm_build.scratch_over_input_requests
    monkeypatch.setattr(cortexm_build, "scratch_over_input_requests",
                        lambda *a, **k: {n: (need, 1 << 20) for n, (need, _) in requests(*a, **k).items()})
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_chain(7, IN_PLACE_SIZES))
    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out, optimize="speed")
    layers = [r for r in res.manifest.layers if r["op"] == "dense"]
    assert len(layers) == len(IN_PLACE_SIZES) - 1
    assert all("pairs over its own bytes" in r["kernel"] for r in layers), [r["kernel"] for r in layers]
    plan = res.manifest.memory_plan
    assert set(plan["pinned"]) == {f"{r['name']}:scratch" for r in layers}
    src = (out / "src" / "model.c").read_text()
    assert src.count("strd r3, r2, [r1, #-8]!") >= len(layers) and "strd r3, r2, [r1], #8" not in src
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(5), t.shape, 40, t.zero_point, 10),
                 stages=("host", "qemu"))
    assert rep.ok, rep.table()
    assert all(s.elements > 0 and s.mismatches == 0 for s in rep.stages if s.stage.startswith("firmware")), \
        rep.table()


PEERS = (peers_dir() or Path(__file__).resolve().parents[1].parent / "shared" / "peers") / "mlperf_tiny"


def test_ad_speed_peak_ram_within_six_tenths_of_the_tflm_arena(tmp_path):
    """MLPerf Tiny's AD under --optimize speed: the first dense layer's 640 int8 inputs widen into 1,280 B of
    int16 pairs over their own bytes (arena 1,280 + its 128 B output), not on the stack (768 B arena + 1,280 B
    of stack before), so an inference needs at most 0.6x TFLM's 2,580 B arena; the firmware stays exact."""
    from edgekit.api import build, verify

    model = PEERS / "ad01_int8.tflite"
    if not model.is_file():
        pytest.skip(f"MLPerf Tiny's ad01_int8.tflite not found in {PEERS}")
    results = json.loads((PEERS / "results.json").read_text())
    tflm_arena = results["anomaly_detection_fc_autoencoder"]["tflm_cmsis_nn_m4"]["arena_used_bytes"]
    out = tmp_path / "ad"
    res = build(model, "cortex-m4", "mps2-an386", out, optimize="speed")
    plan = res.manifest.memory_plan
    first = res.manifest.layers[0]
    assert res.manifest.arena_bytes == 1280 + 128 and plan["scratch"]["0"] == [0, 1280]
    assert plan["pinned"][f"{first['name']}:scratch"] == res.manifest.input["tensor"]
    assert "over its own bytes (1280 B" in first["kernel"]
    assert res.manifest.memory["inference_stack_static_bytes"] < 128    # no widened input on the stack
    peak = res.manifest.memory["peak_ram_bytes"]
    assert tflm_arena == 2580 and peak <= 0.6 * tflm_arena, peak
    golden = np.load(PEERS / "ad01_int8_golden.npz")
    rep = verify(out, codes=golden["inputs"][:3].reshape(3, -1).astype(np.int64), stages=("host", "qemu"))
    assert rep.ok, rep.table()
    # caller-owned input (const): the pairs cannot go over it; they go on the stack as before
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "caller", optimize="speed", io_buffers="caller")
    assert f"{first['name']}:scratch" not in res.manifest.memory_plan["pinned"]
    assert "over its own bytes" not in res.manifest.layers[0]["kernel"]
    assert res.manifest.memory["inference_stack_static_bytes"] >= 1280



def test_speed_weighs_the_arena_growth_against_the_stack(tmp_path, monkeypatch):
    """The build plans the pairs over the dying input only where the arena grows by no more than the pairs would
    add to the inference's stack: here it grows by 40 B for 80 B of stack, so they go over the input; told that
    the stack would cost nothing (another layer's larger stack scratch), the build keeps them on the stack."""
    from edgekit.api import build
    from edgekit.backends.cortexm import build as cortexm_build

    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_chain(5, (40, 8, 6)))
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "a", optimize="speed")
    first = res.manifest.layers[0]
    assert "over its own bytes (80 B" in first["kernel"] and res.manifest.arena_bytes == 80 + 8
    requests = cortexm_build.scratch_over_input_requests
    monkeypatch.setattr(cortexm_build, "scratch_over_input_requests",
                        lambda *a, **k: {n: (need, 0) for n, (need, _) in requests(*a, **k).items()})
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "b", optimize="speed")
    assert "over its own bytes" not in res.manifest.layers[0]["kernel"] and res.manifest.arena_bytes == 40 + 8
    assert not res.manifest.memory_plan["pinned"]
    assert res.manifest.memory["inference_stack_static_bytes"] >= 80
