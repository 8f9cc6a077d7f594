"""dw3_compact (kernels/dw3_compact.py, templates/cortexm/ops_dsp/dw3_compact.c.j2): the depthwise 3x3 kernel
with the fewest flash bytes, which --optimize balanced takes to meet the default flash goal. Random shapes
(strides 1 and 2, SAME and VALID, in place, clamps tighter than int8 or not, per-tensor multipliers) run
bit-exact on the board with the variant forced on every depthwise layer it takes; the layers share one body;
its flash per channel is 9 + 4 + 4 + 1 bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.frontends.tflite.writer import tflite

from test_kernels_dsp import Chain

A = tflite.ActivationFunctionType


def dw_chain(seed: int) -> bytes:
    """conv 3x3 -> depthwise 3x3 stride 1 SAME (in place) -> depthwise 3x3 stride 2 (SAME or VALID) -> 1x1 ->
    depthwise 3x3 stride 1 VALID, per-tensor -> dense; channel counts multiples of 4, odd and even widths."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(7, 14)), int(rng.integers(5, 16))
    ch = Chain(rng, (h, w, int(rng.choice([1, 3]))), zp=int(rng.integers(-60, 60)))
    c1 = int(rng.choice([4, 8, 12, 16]))
    ch.conv(c1, 3)
    ch.conv(0, 3, depthwise=True, act=A.NONE if seed % 2 else A.RELU6)
    ch.conv(0, 3, stride=2, padding=str(rng.choice(["SAME", "VALID"])), depthwise=True)
    ch.conv(int(rng.choice([4, 8])), 1)
    ch.conv(0, 3, padding="VALID", depthwise=True, per_channel=False)
    return ch.dense(int(rng.choice([3, 5]))).build()


@pytest.fixture
def forced(monkeypatch):
    """dw3_compact offered under balanced above every depthwise variant (it is otherwise only the flash goal's)."""
    v = kernel_registry.registry().get("dw3_compact")
    monkeypatch.setattr(v, "modes", frozenset({"balanced"}))
    monkeypatch.setattr(v, "priority", 100)
    return v


@pytest.mark.parametrize("target,board", [("cortex-m4", "mps2-an386"), ("cortex-m7", "mps2-an500")])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dw3_compact_bit_exact_on_random_shapes(seed, target, board, forced, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(dw_chain(seed))
    res = build(model, target, board, tmp_path / "b", optimize="balanced")
    variants = res.manifest.kernel_variants
    dw = [L["name"] for L in res.manifest.layers if L["op"] == "conv2d" and "depthwise" in L["name"]]
    assert dw and all(variants[n] == "dw3_compact" for n in dw), variants
    rep = verify(tmp_path / "b", count=6)
    assert rep.ok, rep.table()
    assert all(s.mismatches == 0 for s in rep.stages)
    # every layer calls the one noinline body (ek_dw3c_run): the static stack bound counts its frame, and covers the
    # stack measured on the board
    su = (tmp_path / "b" / "obj" / "model.su")
    frames = {line.split("\t")[0].split(":")[-1]: int(line.split("\t")[1]) for line in su.read_text().splitlines()}
    static = res.manifest.memory["inference_stack_static_bytes"]
    body = [b for name, b in frames.items() if name.startswith("ek_dw3c_run")]  # or GCC's clone (.constprop, .isra)
    assert body and static >= max(body) and static >= rep.memory["inference_stack_bytes"], (static, frames, rep.memory)
    # one body for them (sharing.py: in-place and other layers alike, without restrict; a layer whose buffer found
    # no free arena bytes has it on the stack, its own code)
    src = (tmp_path / "b" / "src" / "model.c").read_text()
    notes = [line for line in src.splitlines() if line.startswith("/* ek_shared") and "the code of layers" in line]
    in_arena = len(dw) - src.count("no free arena gap: the buffer on the stack")
    assert in_arena < 2 or any(sum(n in line for n in dw) >= in_arena for line in notes), notes

def test_dw3_compact_wide_rows_in_bands(forced, tmp_path):
    """Wide rows whose whole map does not fit the former ring's bytes run in bands of output rows (each band's
    input rows transposed again): stride 1 over 61 columns, stride 2 SAME to 31 (an odd last output), stride 1
    VALID to 29; bit-exact on the board."""
    from edgekit.backends.cortexm.kernels.dw3_compact import band_rows

    rng = np.random.default_rng(21)
    ch = Chain(rng, (5, 61, 3), zp=-17)
    ch.conv(8, 3)
    ch.conv(0, 3, depthwise=True, act=A.RELU6)
    ch.conv(0, 3, stride=2, depthwise=True)
    ch.conv(0, 3, padding="VALID", depthwise=True)
    model = tmp_path / "w.tflite"
    model.write_bytes(ch.dense(3).build())
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "b", optimize="balanced")
    dw = [L for L in res.manifest.layers if L["op"] == "conv2d" and "depthwise" in L["name"]]
    assert len(dw) == 3 and all(res.manifest.kernel_variants[L["name"]] == "dw3_compact" for L in dw)
    assert "bands of 1 output row(s)" in json.dumps(res.manifest.layers)
    rep = verify(tmp_path / "b", count=4)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages), rep.table()
    g = {"ih": 5, "iw": 61, "oh": 5, "ow": 61, "oc": 8, "sh": 1, "sw": 1, "pad_t": 1, "pad_l": 1}
    assert band_rows(g, False, None) < 5 and band_rows(g, True, None) == 5


def test_dw3_compact_flash_per_channel(forced, tmp_path):
    """9 weights, the bias, M and a shift byte per channel, and 9 words of geometry (int16 halves) and ring offset per layer."""
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    model = tmp_path / "m.tflite"
    model.write_bytes(dw_chain(4))
    graph, _ = import_tflite(model)
    run_default_passes(graph)
    plan = plan_memory(graph)
    for node in graph.nodes:
        if node.op == "conv2d" and node.attrs["depthwise"] and forced.refusal(node, graph, plan) is None:
            c = graph.tensors[node.outputs[0]].shape[-1]
            assert forced.select(node, graph, plan).weight_bytes == 18 * c + 4 * 9


def test_dw3_compact_refuses_what_it_does_not_compute(forced, tmp_path):
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    rng = np.random.default_rng(7)
    ch = Chain(rng, (8, 9, 3), zp=3)
    ch.conv(6, 3).conv(0, 3, depthwise=True).conv(8, 1).conv(0, 5, depthwise=True)
    model = tmp_path / "r.tflite"
    model.write_bytes(ch.build())
    graph, _ = import_tflite(model)
    run_default_passes(graph)
    plan = plan_memory(graph)
    why = [forced.refusal(n, graph, plan) for n in graph.nodes if n.op == "conv2d" and n.attrs["depthwise"]]
    assert "6 channels" in why[0] and "3 x 3" in why[1]


def test_dw3_compact_compiles_at_every_optimization_level(forced, tmp_path):
    """Its generic C (intrinsics, a record read through int16 halves) compiles warning-free at -Og, -Os, -O3 and
    with a frame pointer."""
    from helpers.compile_levels import disassembly_at_every_level

    model = tmp_path / "m.tflite"
    model.write_bytes(dw_chain(1))
    build(model, "cortex-m4", "mps2-an386", tmp_path / "b", optimize="balanced")
    dis = disassembly_at_every_level(tmp_path / "b", tmp_path)
    assert "sxtab16" in dis[("-Os",)] and "smlad" in dis[("-O3",)]


@pytest.mark.parametrize("c1,stride", [(16, 2), (8, 1)])
def test_dw3_compact_row_fused_consumer(c1, stride, forced, tmp_path):
    """After a stride-2 conv the depthwise layer may run row-fused (its input a ring of rows, whole output rows per
    call: the stride-2 one here does); it calls the same body with its call's rows. Bit-exact on the board."""
    rng = np.random.default_rng(5)
    ch = Chain(rng, (32, 32, 3), zp=-9)
    ch.conv(c1, 3, stride=2)
    ch.conv(0, 3, stride=stride, depthwise=True, act=A.RELU6)
    ch.conv(16, 1)
    model = tmp_path / "f.tflite"
    model.write_bytes(ch.dense(3).build())
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "b", optimize="balanced")
    assert res.manifest.kernel_variants["depthwise_conv_2d_1"] == "dw3_compact"
    src = (tmp_path / "b" / "src" / "model.c").read_text()
    calls = [line for line in src.splitlines() if "ek_dw3c_run(ek_layer1_depthwise_conv_2d_1_rec" in line]
    assert calls and (stride == 1 or all("p_begin, p_end" in line for line in calls)), calls
    rep = verify(tmp_path / "b", count=4)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages), rep.table()
