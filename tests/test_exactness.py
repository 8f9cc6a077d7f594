"""The bit-exact chain: Brevitas -> qonnx -> simulator -> host C -> firmware on emulated Cortex-M4.

The last tests break one link on purpose (a rounding mode in C, in the simulator, a
single weight) and check that a 1-LSB difference is caught.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.api import build, generate_inputs, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.ir import contract
from edgekit.ir.graph import Graph
from edgekit.sim import quantize_input, simulate
from edgekit.targets import get_board, get_core

from helpers.brevitas_models import make_mlp


def stage(rep, prefix):
    return next(s for s in rep.stages if s.stage.startswith(prefix))


def test_pow2_model_is_exact_on_every_stage(pow2_build):
    rep = verify(pow2_build, count=300, seed=3)
    assert rep.ok and rep.extra["power_of_two"]
    assert [s.stage for s in rep.stages] == ["simulator", "qonnx (float32)", "host C", "firmware (mps2-an386)"]
    for s in rep.stages:
        assert s.must_be_exact and s.mismatches == 0 and s.elements == 300 * 5, s
    assert rep.memory["stack_used_bytes"] > 0


def test_w4_model_is_exact(w4_onnx, tmp_path):
    graph = build(w4_onnx, "cortex-m4", "mps2-an386", tmp_path / "w4")
    consts = Graph.load(tmp_path / "w4").constants
    weights = [v for k, v in consts.items() if k.endswith("_weight")]
    assert all(w.min() >= -7 and w.max() <= 7 for w in weights)  # 4-bit narrow-range codes
    rep = verify(tmp_path / "w4", count=200)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages)


def test_float_scale_model_integer_stages_exact(float_build):
    rep = verify(float_build, count=300, seed=5)
    assert not rep.extra["power_of_two"]
    assert stage(rep, "host C").mismatches == 0 and stage(rep, "firmware").mismatches == 0
    q = stage(rep, "qonnx")
    assert not q.must_be_exact and q.max_lsb <= 1  # reported, not required
    assert rep.ok


def test_brevitas_equals_qonnx_equals_simulator(tmp_path):
    """The first links: the PyTorch model itself, its QONNX export, and the IR simulator."""
    from edgekit.qat import export_qonnx

    model = make_mlp("int8-pow2", seed=7)
    path = export_qonnx(model, torch.zeros(1, 4, 3), tmp_path / "m.onnx")
    build(path, "cortex-m4", "mps2-an386", tmp_path / "b")
    graph = Graph.load(tmp_path / "b")
    x = generate_inputs(graph, 400, seed=11)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).numpy()
    out_t = graph.tensors[graph.outputs[0]]
    brevitas_codes = np.round(y / out_t.scale[0]) + out_t.zero_point
    sim = simulate(graph, quantize_input(graph, x))[graph.outputs[0]]
    np.testing.assert_array_equal(brevitas_codes, sim)


def test_generated_inputs_cover_the_whole_input_range(pow2_build):
    graph = Graph.load(pow2_build)
    codes = quantize_input(graph, generate_inputs(graph, 256))
    iq = graph.input_quant
    assert set(np.unique(codes)) == set(range(iq.qmin, iq.qmax + 1))


# ---- the chain must catch a single 1-LSB difference ---------------------------------
def _copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rebuild_binaries(build_dir: Path) -> None:
    import json

    from edgekit.backends.cortexm.firmware import compile_firmware

    m = json.loads((build_dir / "manifest.json").read_text())
    tc.compile_host(build_dir)
    compile_firmware(build_dir, get_core(m["target"]), get_board(m["board"]), build_dir / "firmware" / "link.ld")


def test_broken_c_rounding_is_caught(pow2_build, tmp_path):
    """Round half up instead of half to even in C: off by exactly 1 LSB on ties only."""
    b = _copy_build(pow2_build, tmp_path / "broken")
    hdr = b / "src" / "ek_contract.h"
    text = hdr.read_text()
    broken = text.replace("((rem == half) & ((uint32_t)floor_q & 1u))", "(rem == half)")
    assert broken != text
    hdr.write_text(broken)
    _rebuild_binaries(b)
    rep = verify(b, count=300, seed=3)
    assert not rep.ok
    for name in ("host C", "firmware"):
        s = stage(rep, name)
        assert s.mismatches > 0 and s.max_lsb == 1
    assert stage(rep, "qonnx").mismatches == 0


def test_broken_simulator_rounding_is_caught(pow2_build, monkeypatch):
    """Round half away from zero in the simulator: every other stage now disagrees with it."""
    def half_away(x, shift):
        x = np.asarray(x, np.int64)
        s = np.asarray(shift, np.int64)
        sp = np.maximum(s, 1)
        r = np.sign(x) * ((np.abs(x) + (np.int64(1) << (sp - 1))) >> sp)
        return np.where(s == 0, x, r)

    def half_away_float(x, shift):  # the simulator's shift of exact float sums (ops/_gemm.py)
        x *= np.ldexp(np.ones(np.size(shift), x.dtype), -np.asarray(shift, np.int64).ravel())
        return np.copysign(np.floor(np.abs(x) + 0.5), x, out=x)

    monkeypatch.setattr(contract, "rshift_rne", half_away)
    monkeypatch.setattr(contract, "rshift_rne_float", half_away_float)
    rep = verify(pow2_build, count=300, seed=3)
    assert not rep.ok
    assert stage(rep, "qonnx").max_lsb == 1 and stage(rep, "firmware").max_lsb == 1


def test_single_changed_bias_is_caught(pow2_build, tmp_path):
    """Add 1 << (shift - 1) to one bias in model.c: a tie-sized nudge of one output channel."""
    b = _copy_build(pow2_build, tmp_path / "bias")
    graph = Graph.load(b)
    last = graph.nodes[-1]
    rq = last.attrs["requant"]
    bias = graph.constants[last.inputs[2]]
    src = (b / "src" / "model.c").read_text()
    sym = "ek_" + last.inputs[2]
    start = src.index(f"{sym}[")
    body_start = src.index("{", start) + 1
    body_end = src.index("}", body_start)
    values = [int(v) for v in src[body_start:body_end].replace("\n", " ").split(",")]
    assert values == bias.tolist()
    values[0] += 1 << rq.shift[0]  # exactly one output LSB on channel 0 (before clamping)
    src = src[:body_start] + "\n    " + ", ".join(map(str, values)) + "\n" + src[body_end:]
    (b / "src" / "model.c").write_text(src)
    _rebuild_binaries(b)
    rep = verify(b, count=200, seed=1)
    assert not rep.ok
    for name in ("host C", "firmware"):
        s = stage(rep, name)
        assert 0 < s.mismatches <= 200 and s.max_lsb == 1
