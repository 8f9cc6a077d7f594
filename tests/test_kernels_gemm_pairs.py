"""conv2d_gemm_2x2 (kernels/conv2d_gemm.py ConvGemmPairs, templates/cortexm/ops_dsp/conv2d_gemm_2x2.j2): under
--optimize speed the int16 GEMM layers with K of PAIR_MIN_KWORDS k-pairs or more (PAIR_MIN_KWORDS_RES with a fused
add) run on pixel pairs, two k-pairs per step (LDM of 4 im2col words, LDM of 4 weight pairs, 8 SMLAD), with 14
registers (r7 kept by the asm in the im2col buffer). Random ResNet-like chains (odd and even K, odd pixel counts that leave one
pixel for the 2-pixel tail buffer, row-fused ranges, stride 2, a fused add in place over the trunk) are bit-exact on
the emulated Cortex-M4 and M7 and compile at every optimization level, also with -fno-omit-frame-pointer."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import conv2d_gemm as gemm
from edgekit.frontends.tflite.writer import tflite
from helpers.codes import input_codes
from helpers.compile_levels import disassembly_at_every_level
from helpers.planned import planned_graph
from test_kernels_dsp import BOARDS, Chain, _check


def chain_pairs(seed: int) -> bytes:
    """conv 3x3 from 16 or 18 channels (K 72 or 81 k-pairs) to 32 (the trunk) -> conv 3x3 RELU -> conv 3x3 + trunk
    (K 144, the ADD fused in place) -> conv 3x3/2 -> dense; odd and even map sizes."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.choice([5, 7, 8])), int(rng.choice([5, 7, 9]))
    ch = Chain(rng, (h, w, int(rng.choice([16, 18]))), zp=int(rng.integers(-60, 60)))
    ch.conv(32, 3)
    trunk = (ch.x, ch.scale, ch.zp)
    ch.conv(32, 3, act=tflite.ActivationFunctionType.RELU).conv(32, 3).add_to(trunk)
    ch.conv(int(rng.choice([16, 24])), 3, stride=2)
    return ch.dense(int(rng.choice([5, 7]))).build()


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pixel_pair_gemm_bit_exact(seed, target, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"p{seed}.tflite"
    model.write_bytes(chain_pairs(seed))
    out = tmp_path / "b"
    res = build(model, target, BOARDS[target], out, optimize="speed")
    m = res.manifest.to_json()
    variants = m["kernel_variants"]
    graph = Graph.load(out)
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    pairs = [n.name for n in convs if variants[n.name] == gemm.ConvGemmPairs.name]
    # every 3x3 conv has K >= 72 k-pairs: all of them on pixel pairs, the fused add's (K 144) too
    assert pairs == [n.name for n in convs], variants
    assert any(n.attrs.get("residual") for n in convs if n.name in pairs)
    kernels = {r["name"]: r.get("kernel", "") for r in m["layers"]}
    assert all("2x2 SMLAD micro-kernel on 2 k-pairs per step" in kernels[n] for n in pairs), kernels
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 24, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, set(pairs), weights="int16")
    # the static stack bound counts ek_im2col2's frame where a layer calls it (codegen's layer helpers) and covers the
    # stack measured on the board
    src = (out / "src" / "model.c").read_text()
    su = {line.split("\t")[0].split(":")[-1].split(".")[0] for line in (out / "obj" / "model.su").read_text().splitlines()}
    assert ("ek_im2col2_" in src.split("EK_LAYER void", 1)[1]) == any(n.startswith("ek_im2col2_") for n in su), su
    assert m["memory"]["inference_stack_static_bytes"] >= rep.memory["inference_stack_bytes"], (m["memory"], rep.memory)
    assert "str r7, [%[xp], #" in src and "ldmia %[wp]!, { %[w0], %[w1], %[w2], %[w3]}" in src
    if target == "cortex-m4" and seed in (0, 1):
        for flags, dis in disassembly_at_every_level(out, tmp_path).items():
            # the pixel pairs' step: LDM of four weight pairs into r0-r3 (the reference kernels at -O0)
            assert ("ldmia" in dis and "{r0, r1, r2, r3}" in dis) == (flags != ("-O0",)), flags


def test_pixel_pairs_cover_odd_k_odd_pixels_and_row_ranges(tmp_path):
    """The chains above reach the paths the template has, read from the imported graphs and their memory plans: an
    odd K (81: one single step first), an odd pixel count (the last pixel through tail2), a row-fused consumer
    (pixel ranges) and a fused add, each on a layer that the pixel pairs take (K of PAIR_MIN_KWORDS or more)."""
    ks, seen = set(), set()
    for seed in range(4):
        graph, plan = planned_graph(chain_pairs(seed), tmp_path, f"p{seed}.tflite")
        for node in graph.nodes:
            if node.op != "conv2d":
                continue
            oc, kh, kw, ic = graph.tensors[node.inputs[1]].shape
            oh, ow, _ = graph.tensors[node.outputs[0]].shape
            kwords = -(-kh * kw * ic // 2)
            res = bool(node.attrs.get("residual"))
            if kwords < (gemm.PAIR_MIN_KWORDS_RES if res else gemm.PAIR_MIN_KWORDS):
                continue
            ks.add(kwords)
            fusion = plan.fusion_of(node.name)
            seen |= {name for name, reached in (("odd k", kwords % 2), ("odd pixels", (oh * ow) % 2),
                                                ("row range", fusion is not None and fusion.consumer == node.name),
                                                ("fused add", res)) if reached}
    assert {72, 81} <= ks and seen == {"odd k", "odd pixels", "row range", "fused add"}, (ks, seen)


def test_short_k_stays_on_the_3x2_kernel():
    """Below the measured break-even (PAIR_MIN_KWORDS, PAIR_MIN_KWORDS_RES with a fused add) the 3x2 kernel keeps
    the layer; int8 weights and the C epilogue never take the pixel pairs."""
    from edgekit.backends.cortexm.kernels.base import Selection

    def sel(kwords, res=False, **kw):
        d = {"kwords": kwords, "int8_weights": False, "nblocks": 1, "pixels": gemm.GEMM_PIXELS,
             "asm_rq": {"res": {"m": 1}} if res else {"sat": "ssat"}, "npix": 64,
             "oc_pad": 16, "summary": "x, 3x2 SMLAD micro-kernel", "im2col3": True, "unroll": 7}
        d.update(kw)
        return Selection(gemm.ConvGemm.name, gemm.ConvGemm.template, ctx=d)

    assert gemm.ConvGemmPairs.applies(sel(gemm.PAIR_MIN_KWORDS))
    assert not gemm.ConvGemmPairs.applies(sel(gemm.PAIR_MIN_KWORDS - 1))
    assert not gemm.ConvGemmPairs.applies(sel(gemm.PAIR_MIN_KWORDS_RES - 1, res=True))
    assert gemm.ConvGemmPairs.applies(sel(gemm.PAIR_MIN_KWORDS_RES, res=True))
    assert not gemm.ConvGemmPairs.applies(sel(200, int8_weights=True))
    assert not gemm.ConvGemmPairs.applies(sel(200, asm_rq=None))
    s = sel(144)
    left = gemm.ConvGemmPairs.take([s], 10**6)
    assert s.kind == "conv2d_gemm_2x2" and s.ctx["pixels"] == 2 and s.ctx["im2col2"] and not s.ctx["im2col3"]
    assert left == 10**6 - gemm.ConvGemmPairs.code_bytes({"kwords": 144, "unroll": 7}) > 0
    # no budget: the layer stays conv2d_gemm
    s = sel(144)
    gemm.ConvGemmPairs.take([s], 100)
    assert s.kind == gemm.ConvGemm.name and s.ctx["pixels"] == gemm.GEMM_PIXELS


def test_speed_pass_breaks_ties_in_graph_order(monkeypatch):
    """Layers of equal gain per code byte that the budget cannot all take: the first in graph order becomes
    conv2d_gemm_straight, whatever the objects' addresses (the pass sorted ties by id(), so which layer got the
    straight-line steps could change from run to run)."""
    from edgekit.backends.cortexm.kernels.base import Selection

    def sel():
        d = {"kwords": 60, "int8_weights": False, "nblocks": 1, "pixels": gemm.GEMM_PIXELS, "asm_rq": None,
             "npix": 64, "oc_pad": 16, "summary": "x", "unroll": gemm.unroll(60, full=True)}
        return Selection(gemm.ConvGemm.name, gemm.ConvGemm.template, ctx=d)

    d = sel().ctx
    extra = gemm.STEP_CODE_BYTES * (gemm.code_steps(60, gemm.speed_unroll(60)) - gemm.code_steps(60, d["unroll"]))
    assert extra > 0
    monkeypatch.setattr(gemm, "SPEED_CODE_DEFAULT", extra)  # room for one layer's straight-line steps
    for _ in range(8):
        layers = [sel() for _ in range(4)]
        gemm.ConvGemm.speed_pass(layers, None)
        assert [s.kind for s in layers] == [gemm.ConvGemmStraight.name] + [gemm.ConvGemm.name] * 3


def test_pixel_pairs_run_bit_exact_with_a_frame_pointer(tmp_path, monkeypatch):
    """The assembly's r7 at run time, not only at compile time: the firmware compiled with -fno-omit-frame-pointer
    (r7 the layer functions' frame pointer, which the asm keeps in the im2col buffer while it uses r7 as the fourth
    accumulator) at -O2 and -Os gives the simulator's outputs on the emulated M4 (seed 1: odd K, an odd pixel count,
    a row-fused consumer with the fused add)."""
    import shutil

    from edgekit.api import build, verify
    from edgekit.backends.cortexm import toolchain as tc
    from edgekit.ir.graph import Graph
    from edgekit.manifest import load_manifest
    from edgekit.targets import get_core

    model = tmp_path / "p.tflite"
    model.write_bytes(chain_pairs(1))
    base = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", base, optimize="speed")
    manifest = load_manifest(base)
    assert gemm.ConvGemmPairs.name in manifest.kernel_variants.values()
    core = get_core(manifest.target)
    t = Graph.load(base).tensors[Graph.load(base).inputs[0]]
    codes = input_codes(np.random.default_rng(1), t.shape, 16, t.zero_point, 10)
    monkeypatch.setattr(tc, "FIRMWARE_CFLAGS", [*tc.FIRMWARE_CFLAGS, "-fno-omit-frame-pointer"])
    for opt in ("-O2", "-Os"):
        dest = tmp_path / f"fp{opt}"
        shutil.copytree(base, dest)
        objects = tc.compile_objects(dest, core, optimization=opt)
        tc.link_firmware(dest, core, objects, dest / "firmware" / "link.ld", dest / manifest.firmware)
        dis = subprocess.run([tc._binutil("objdump"), "-d", str(dest / "obj" / "model.o")], capture_output=True,
                             text=True, check=True).stdout
        assert re.search(r"add\s+r7, sp", dis), opt  # the frame pointer is set up
        rep = verify(dest, codes=codes, stages=("qemu",))
        assert rep.ok and rep.stages[-1].mismatches == 0, f"{opt}\n{rep.table()}"
