"""Row fusion (ir/planner.py, issue 16): a convolution's output kept in a ring of rows while the next
convolution consumes it step by step. The schedule keeps every row a step reads, the consumer writes
over the producer's input only where the producer is done with it, and the fused C is bit-exact with
the reference, the DSP and the Helium kernels."""
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


@pytest.mark.parametrize("depthwise", [False, True])
def test_ring_keeps_every_row_a_step_reads(rng, depthwise):
    """Replay the schedule: A writes its pixels block by block into ring slot p % L; before each of B's
    steps, every A row inside B's windows must still be in its slot (not yet overwritten). A depthwise B
    steps by whole rows."""
    for _ in range(400):
        ga, gb = _geometry(rng)
        if depthwise:
            gb.update(depthwise=True, ic=ga["oc"], oc=ga["oc"])
        step, a_end, ring = fusion_schedule(ga, gb)
        assert ring % ga["ow"] == 0 and step % (gb["ow"] if depthwise else FUSE_BLOCK) == 0
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


@pytest.mark.parametrize("depthwise", [False, True])
def test_overwrite_proof_agrees_with_a_replay(rng, depthwise):
    """B's output over A's input (a residual block): the proof accepts exactly the schedules whose
    replay never lets A read an input byte B has already written."""
    accepted = 0
    for _ in range(400):
        ga, gb = _geometry(rng)
        if depthwise:  # a depthwise B's output starts at A's input's offset, whatever its shape
            gb.update(depthwise=True, ic=ga["oc"], oc=ga["oc"])
        else:
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
        assert any(variants[f["producer"]] in ("conv2d_gemm_int8", "conv2d_gemm_int8_shared", "conv2d_fewch_int8")
                   for f in plan["fused"]), variants


def test_fusion_makes_the_arena_smaller(tmp_path):
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


@pytest.mark.parametrize("seed", [1, 4, 5, 9])
def test_helium_gemm_runs_fused_bit_exact(seed, tmp_path):
    """The M55's GEMM (ops_mve/gemm.c.j2) computes pixel ranges over rings of rows too: the build keeps
    the fusions, both layers of each on the Helium kernel, and the firmware equals the simulator."""
    path = tmp_path / "m.tflite"
    path.write_bytes(_block_model(seed))
    res = build(path, "cortex-m55", "mps3-an547", tmp_path / "h")
    plan = res.manifest.memory_plan
    assert plan["fused"], plan["strategy"]
    variants = res.manifest.kernel_variants
    assert all(variants[f[k]] == "mve_gemm" for f in plan["fused"] for k in ("producer", "consumer")), variants
    assert "p_begin" in (tmp_path / "h" / "src" / "model.c").read_text()
    rep = verify(tmp_path / "h", count=16, seed=seed)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].elements > 0 and stages[stage].mismatches == 0, rep.table()


def _mobile_model(seed: int) -> bytes:
    """MobileNet's first layers, random sizes: [conv A -> depthwise B] -> pointwise, where A is a 3x3 conv
    on the input (stride 1 or 2) or a pointwise conv after one; B 3x3 of stride 1 or 2, 'same' or 'valid'."""
    rng = np.random.default_rng(seed)
    A = tflite.ActivationFunctionType
    h, w = int(rng.integers(12, 25)), int(rng.integers(10, 23))
    b = TfliteBuilder()
    x = b.act((1, h, w, 3), 0.02, int(rng.integers(-60, 60)))
    y, shape, scale = x, (h, w, 3), 0.02
    if seed % 2:  # pointwise A after a first conv
        y, shape, scale, _ = conv_layer(b, rng, y, shape, scale, int(rng.choice([4, 8])), 3, act=A.RELU6,
                                        x_rms=45.0, zp_range=30)
        ka, sa = 1, 1
    else:  # A is the first conv
        ka, sa = 3, int(rng.choice([1, 2]))
    y, shape, scale, _ = conv_layer(b, rng, y, shape, scale, int(rng.choice([4, 8, 16])), ka, sa, act=A.RELU6,
                                    x_rms=40.0, zp_range=30)
    y, shape, scale, _ = conv_layer(b, rng, y, shape, scale, 0, 3, int(rng.choice([1, 2])),
                                    padding=str(rng.choice(["SAME", "VALID"])), act=A.RELU6, depthwise=True,
                                    x_rms=30.0, zp_range=30)
    out, _, _, _ = conv_layer(b, rng, y, shape, scale, 4, 1, act=A.NONE, x_rms=30.0, zp_range=30)
    return b.build([x], [out])


@pytest.mark.parametrize("seed", [0, 1, 3, 6, 8, 9])  # 0, 1, 8: the depthwise output over A's input
@pytest.mark.parametrize("kernels", ["reference", "optimized"])
def test_fused_depthwise_consumers_bit_exact(seed, kernels, tmp_path):
    """conv -> depthwise pairs run band by band, the depthwise output over the conv's input where the
    replayed schedule allows (a pinned placement): host and firmware equal the simulator, the arena is
    smaller than unfused, and the optimized build runs both layers on DSP kernels."""
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    path = tmp_path / "m.tflite"
    path.write_bytes(_mobile_model(seed))
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b", kernels=kernels)
    plan = res.manifest.memory_plan
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    assert res.manifest.arena_bytes < plan_memory(graph, fuse=False).arena_bytes
    (f,) = plan["fused"]
    nodes = {n.name: n for n in graph.nodes}
    assert nodes[f["consumer"]].attrs["depthwise"] and f["step"] % graph.tensors[nodes[f["consumer"]].outputs[0]].shape[1] == 0
    if f["over_input"]:
        y = nodes[f["consumer"]].outputs[0]
        assert plan["pinned"].get(y) and plan["tensors"][y]["offset"] == plan["tensors"][plan["pinned"][y]]["offset"]
    rep = verify(tmp_path / "b", count=16, seed=seed)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].elements > 0 and stages[stage].mismatches == 0, rep.table()
    if kernels == "optimized":
        variants = res.manifest.kernel_variants
        # a conv over at most 4 input channels (the first conv, or a pointwise after 4) runs the few-channel
        # kernel, over its pixel ranges too
        few = graph.tensors[nodes[f["producer"]].inputs[0]].shape[2] <= 4
        assert variants[f["producer"]].startswith("conv2d_fewch" if few else "conv2d_gemm") \
            and variants[f["consumer"]].startswith("dw3"), variants
        assert not res.manifest.kernel_fallbacks


@pytest.mark.parametrize("seed", [0, 1, 3, 6, 8, 9])
def test_fused_depthwise_consumers_on_helium(seed, tmp_path):
    """On the M55 the Helium depthwise kernel computes whole rows per call when its lines are rows (square
    and tall maps): the pair stays fused on mve_gemm + mve_dw, else the build plans without it; either way
    the firmware equals the simulator."""
    from edgekit.backends.cortexm.kernels.mve_dw import axes
    from edgekit.ir.graph import Graph
    from edgekit.ops.conv2d import conv_geometry

    path = tmp_path / "m.tflite"
    path.write_bytes(_mobile_model(seed))
    res = build(path, "cortex-m55", "mps3-an547", tmp_path / "h")
    graph = Graph.load(tmp_path / "h")
    variants = res.manifest.kernel_variants
    dw = next(n for n in graph.nodes if n.op == "conv2d" and n.attrs["depthwise"])
    rows = variants[dw.name] == "mve_dw" and axes(conv_geometry(dw, graph))["R"]["name"] == "y"
    fused = {f["consumer"]: f for f in res.manifest.memory_plan["fused"]}
    assert (dw.name in fused) == (seed in (0, 1, 6, 9)), fused  # 3 and 8: lines along x, planned unfused
    if dw.name in fused:
        assert rows and variants[fused[dw.name]["producer"]] == "mve_gemm", variants
    rep = verify(tmp_path / "h", count=16, seed=seed)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].elements > 0 and stages[stage].mismatches == 0, rep.table()


def test_pinned_overlap_is_used_on_some_shapes():
    """The generator above reaches the case the fusion exists for: B's output over A's input."""
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import check_plan, plan_memory
    import tempfile
    from pathlib import Path

    pinned = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1, 3, 6, 8, 9):
            path = Path(tmp) / f"m{seed}.tflite"
            path.write_bytes(_mobile_model(seed))
            graph, _ = import_tflite(path)
            run_default_passes(graph)
            plan = plan_memory(graph)
            check_plan(plan)
            pinned += bool(plan.pinned)
    assert pinned >= 2


@pytest.mark.parametrize("model,seed", [("block", 1), ("block", 5), ("mobile", 0), ("mobile", 1)])
def test_fused_host_build_under_asan_ubsan(model, seed, tmp_path):
    """The fused layers' ring addressing and in-place overwrite (a residual block's add, a depthwise output
    pinned over its producer's input) under the sanitisers (reference kernels, as the host build compiles
    them), outputs equal to the simulator's."""
    from test_generated_c_safety import _sanitized_copy

    path = tmp_path / "m.tflite"
    path.write_bytes((_block_model if model == "block" else _mobile_model)(seed))
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b")
    assert res.manifest.memory_plan["fused"]
    rep = verify(_sanitized_copy(tmp_path / "b", tmp_path / "asan"), count=16, seed=2, stages=("host",))
    assert rep.ok and rep.stages[-1].mismatches == 0, rep.table()


def test_zoo_mobilenet_first_layers_run_in_bands(tmp_path):
    """MobileNetV1 0.25 at 96x96x3 (the VWW architecture, edgekit.qat.zoo): the first conv -> depthwise and
    pointwise -> depthwise pairs fuse, each depthwise output pinned over its producer's input, and the arena
    falls from 55,296 B (the 48x48x8 map beside the 48x48x16 one) to 29,952 B, the lower bound of the fused
    plan: the 96x96x3 input, with the first depthwise output over it, and the first conv's ring of 6 rows."""
    import torch

    from edgekit.frontends.qonnx import import_qonnx
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import check_plan, plan_memory
    from edgekit.qat import export_qonnx
    from edgekit.qat.zoo import ZOO, calibrate

    torch.manual_seed(0)
    model = calibrate(ZOO["mobilenetv1-0.25"]())
    graph, _ = import_qonnx(export_qonnx(model, torch.zeros(1, *model.input_shape), tmp_path / "m.onnx"))
    run_default_passes(graph)
    plain, fused = plan_memory(graph, fuse=False), plan_memory(graph)
    check_plan(fused)
    assert plain.arena_bytes == 48 * 48 * (8 + 16) == 55_296
    assert [(f.producer, f.consumer, f.over_input, f.ring_rows) for f in fused.fused] == [
        ("Conv_0", "Conv_1", True, 6), ("Conv_2", "Conv_3", True, 9)]
    assert fused.arena_bytes == fused.lower_bound == 96 * 96 * 3 + 6 * 48 * 8 == 29_952
