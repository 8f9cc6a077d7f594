"""The memory planner: no overlap while live, in-place where proven safe, optimal on small graphs."""
from __future__ import annotations

import numpy as np
import torch

from edgekit.api import build
from edgekit.ir.graph import Graph
from edgekit.ir.planner import Placement, _lower_bound, _place, check_plan, plan_memory
from edgekit.qat import export_qonnx

from helpers.brevitas_models import inplace_dw_pw_chain
from helpers.calibration import calibrate


def test_inplace_depthwise_and_pointwise(tmp_path):
    shape = (3, 7, 6)
    torch.manual_seed(0)
    model = calibrate(inplace_dw_pw_chain(), shape, passes=1, batch=8, spread=1.0)
    path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / "m.onnx")
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b")
    plan = res.manifest.memory_plan
    ops = {n.name: n.op for n in Graph.load(tmp_path / "b").nodes}
    inplace_ops = sorted(ops[n] for n in plan["inplace"])
    assert inplace_ops == ["conv2d", "conv2d", "conv2d"], plan["inplace"]  # dw 3x3, pw 8->6, dw 5x5
    # every feature map is 7x6 pixels x at most 8 channels: in place, one map's bytes suffice, and the
    # 4-channel output of the last (3x3, not in place) conv beside them; the 3-channel input is dead by then
    assert res.manifest.arena_bytes == 7 * 6 * 8 + 7 * 6 * 4
    # with caller-owned input and output, one map's bytes
    assert build(path, "cortex-m4", "mps2-an386", tmp_path / "c", io_buffers="caller").manifest.arena_bytes == 7 * 6 * 8
    src = (tmp_path / "b" / "src" / "model.c").read_text()
    assert "ring[" in src and "over input pixel" in src


def test_placement_never_overlaps_and_meets_bound_when_possible(rng):
    for trial in range(200):
        n = int(rng.integers(1, 7))
        ps = []
        for i in range(n):
            first = int(rng.integers(-1, 8))
            ps.append(Placement(f"t{i}", -1, int(rng.integers(1, 64)) * 4, first, first + int(rng.integers(0, 4)),
                                "arena"))
        from edgekit.ir.planner import MemoryPlan
        import itertools

        best = min(_place(list(o))[1] for o in itertools.permutations(ps))
        offsets, total = _place(sorted(ps, key=lambda p: -p.size))
        assert total >= best >= _lower_bound(ps)
        for p in ps:
            p.offset = offsets[p.tensor]
        check_plan(MemoryPlan({p.tensor: p for p in ps}, total))


def test_plan_of_a_built_model_is_consistent(pow2_build):
    graph = Graph.load(pow2_build)
    plan = plan_memory(graph)
    check_plan(plan)
    assert plan.arena_bytes >= plan.lower_bound > 0
    assert np.all([p.buffer in ("arena", "input", "output") for p in plan.placements.values()])
