"""Row fusion (ir/planner.py, issue 16): a convolution's output kept in a ring of rows while the next
convolution consumes it step by step. The schedule keeps every row a step reads, the consumer writes
over the producer's input only where the producer is done with it, and the fused C is bit-exact with
the reference and the DSP kernels (Helium builds plan without the fusion: no row ranges there)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from edgekit.ir.planner import FUSE_BLOCK, _overwrite_is_safe, fusion_schedule
from edgekit.backends.cortexm.kernels.conv2d_gemm import GEMM_PIXELS

from helpers.tflite_layers import conv_layer


def _geometry(rng):
    """Conv A (k, stride, pad 'same'-like) feeding conv B, random sizes."""
    ih, iw = int(rng.integers(3, 20)), int(rng.integers(3, 20))
    ka, sa = int(rng.choice([1, 3, 5])), int(rng.choice([1, 2]))
    oh, ow = -(-ih // sa), -(-iw // sa)
    kb, sb, db = int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 2])), int(rng.choice([1, 2]))
    pb = int(rng.integers(0, kb))
    ekb = (kb - 1) * db + 1
    bh = max(1, (oh + pb + int(rng.integers(0, kb)) - ekb) // sb + 1)
    bw = max(1, (ow + int(rng.integers(0, 3)) - 1) // sb + 1)
    ga = {"ih": ih, "iw": iw, "ic": int(rng.integers(1, 9)), "oh": oh, "ow": ow, "oc": int(rng.integers(1, 9)),
          "kh": ka, "sh": sa, "dh": 1, "pad_t": ka // 2, "x_item": 1, "y_item": 1}
    gb = {"ih": oh, "iw": ow, "ic": ga["oc"], "oh": bh, "ow": bw, "oc": int(rng.integers(1, 9)), "kh": kb,
          "sh": sb, "dh": db, "pad_t": pb, "x_item": 1, "y_item": 1}
    return ga, gb


def test_block_matches_the_gemm_kernels():
    assert FUSE_BLOCK == GEMM_PIXELS


def test_ring_keeps_every_row_a_step_reads(rng):
    """Replay the schedule: A writes its pixels block by block into ring slot p % L; before each of B's
    steps, every A row inside B's windows must still be in its slot (not yet overwritten)."""
    for _ in range(400):
        ga, gb = _geometry(rng)
        step, a_end, ring = fusion_schedule(ga, gb)
        assert ring % ga["ow"] == 0 and step % FUSE_BLOCK == 0
        npa, npb = ga["oh"] * ga["ow"], gb["oh"] * gb["ow"]
        assert len(a_end) == -(-npb // step) and a_end == sorted(a_end) and a_end[-1] <= npa
        slots = np.full(ring, -1)
        done = 0
        for s, end in enumerate(a_end):
            assert done % FUSE_BLOCK == 0 or done == npa  # A computes whole blocks
            for p in range(done, end):
                slots[p % ring] = p
            done = max(done, end)
            for q in range(s * step, min(npb, (s + 1) * step)):
                oy = q // gb["ow"]
                for ky in range(gb["kh"]):
                    iy = oy * gb["sh"] - gb["pad_t"] + ky * gb["dh"]
                    if 0 <= iy < ga["oh"]:
                        row = slots[(iy % (ring // ga["ow"])) * ga["ow"]:][:ga["ow"]]
                        assert list(row) == list(range(iy * ga["ow"], (iy + 1) * ga["ow"])), (ga, gb, s, iy)


def test_overwrite_proof_agrees_with_a_replay(rng):
    """B's output over A's input (a residual block): the proof accepts exactly the schedules whose
    replay never lets A read an input byte B has already written."""
    accepted = 0
    for _ in range(400):
        ga, gb = _geometry(rng)
        gb.update(oh=ga["ih"], ow=ga["iw"], oc=ga["ic"])  # B's output has A's input's shape
        step, a_end, _ = fusion_schedule(ga, gb)
        npa, npb = ga["oh"] * ga["ow"], gb["oh"] * gb["ow"]
        written = 0  # bytes of A's input B has overwritten
        ok = True
        done = 0
        for s, end in enumerate(a_end):
            for p in range(done, end):  # A reads input rows of pixel p's windows
                top = max(0, (p // ga["ow"]) * ga["sh"] - ga["pad_t"])
                if top * ga["iw"] * ga["ic"] < written:
                    ok = False
            done = max(done, end)
            written = max(written, min(npb, (s + 1) * step) * gb["oc"])
        assert _overwrite_is_safe(ga, gb, step, a_end) == ok, (ga, gb)
        accepted += ok
    assert accepted > 0


def _block_model(seed: int) -> bytes:
    """conv -> [conv A -> conv B (+ A's input)] -> conv, ResNet-like: B's residual is A's input when the
    shapes allow; random sizes, strides, kernels and zero points."""
    rng = np.random.default_rng(seed)
    A = tflite.ActivationFunctionType
    h, w = int(rng.integers(10, 19)), int(rng.integers(9, 17))
    b = TfliteBuilder()
    x = b.act((1, h, w, 3), 0.02, int(rng.integers(-60, 60)))
    c0 = int(rng.choice([4, 8, 12]))
    x0, s0_shape, s0, z0 = conv_layer(b, rng, x, (h, w, 3), 0.02, c0, 3, act=A.RELU, x_rms=45.0, zp_range=30)
    stride = int(rng.choice([1, 1, 2]))
    ka = int(rng.choice([3, 3, 5]))
    x1, s1_shape, s1, _ = conv_layer(b, rng, x0, s0_shape, s0, int(rng.choice([4, 8, 16])), ka, stride,
                                     act=A.RELU, x_rms=30.0, zp_range=30)
    oc_b = c0 if stride == 1 else int(rng.choice([4, 8]))
    x2, s2_shape, s2, _ = conv_layer(b, rng, x1, s1_shape, s1, oc_b, 3, act=A.NONE, x_rms=30.0, zp_range=30)
    if stride == 1:
        s = float(np.hypot(s2, s0)) * 0.8
        y = b.act((1,) + s2_shape, s, int(rng.integers(-20, 20)))
        b.op("ADD", [x2, x0], [y], "AddOptions", FusedActivationFunction=A.RELU)
        x2, s2 = y, s
    out, _, _, _ = conv_layer(b, rng, x2, s2_shape, s2, 4, 3, stride=2, act=A.NONE, x_rms=30.0, zp_range=30)
    return b.build([x], [out])


@pytest.mark.parametrize("seed", [1, 4, 5, 9])  # residual blocks (1, 9: a 3-row ring), a stride-2 consumer (4, 5)
@pytest.mark.parametrize("kernels", ["reference", "optimized"])
def test_fused_blocks_bit_exact(seed, kernels, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(_block_model(seed))
    # size: the int8-weight GEMM (balanced gives a model this small int16 weights within the flash goal)
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b", kernels=kernels,
                optimize="size" if kernels == "optimized" else None)
    plan = res.manifest.memory_plan
    assert plan["fused"], plan["strategy"]
    src = (tmp_path / "b" / "src" / "model.c").read_text()
    assert "row-fused with" in src and "p_begin" in src
    rep = verify(tmp_path / "b", count=16, seed=seed)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].elements > 0 and stages[stage].mismatches == 0, rep.table()
    if kernels == "optimized":
        variants = res.manifest.kernel_variants
        assert any(variants[f["producer"]] == "conv2d_gemm_int8" for f in plan["fused"]), variants


def test_fusion_makes_the_arena_smaller_and_helium_plans_without_it(tmp_path):
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import check_plan, plan_memory

    path = tmp_path / "m.tflite"
    path.write_bytes(_block_model(1))
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    fused, plain = plan_memory(graph), plan_memory(graph, fuse=False)
    check_plan(fused)
    assert fused.fused and not plain.fused and fused.arena_bytes < plain.arena_bytes
    # the M55's GEMM kernel has no row ranges: the build plans again without those fusions
    res = build(path, "cortex-m55", "mps3-an547", tmp_path / "h")
    assert not res.manifest.memory_plan["fused"]
    rep = verify(tmp_path / "h", count=8, seed=1)
    assert rep.ok, rep.table()


@pytest.mark.parametrize("seed", [1, 5])
def test_fused_host_build_under_asan_ubsan(seed, tmp_path):
    """The fused layers' ring addressing and in-place overwrite under the sanitisers (reference kernels, as
    the host build compiles them), outputs equal to the simulator's."""
    from test_generated_c_safety import _sanitized_copy

    path = tmp_path / "m.tflite"
    path.write_bytes(_block_model(seed))
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b")
    assert res.manifest.memory_plan["fused"]
    rep = verify(_sanitized_copy(tmp_path / "b", tmp_path / "asan"), count=16, seed=2, stages=("host",))
    assert rep.ok and rep.stages[-1].mismatches == 0, rep.table()
