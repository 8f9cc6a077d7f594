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


def _fc_graph(tmp_path, sizes, fork: bool = False):
    """An int8 FULLY_CONNECTED chain (tests/test_kernels_dense.fc_chain); with ``fork`` a second dense layer
    reads the first one's input too and an ADD joins them (the input lives on after the first)."""
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.frontends.tflite.writer import TfliteBuilder
    from edgekit.ir.passes import run_default_passes
    from test_kernels_dense import fc_chain

    path = tmp_path / "fc.tflite"
    if fork:
        rng = np.random.default_rng(1)
        b = TfliteBuilder()
        x = b.act((1, sizes[0]), 0.05, 3)
        ys = []
        for k in range(2):
            w = b.tensor((sizes[1], sizes[0]), "int8", np.float32([0.004]), np.zeros(1, np.int64),
                         rng.integers(-127, 128, (sizes[1], sizes[0])))
            bias = b.tensor((sizes[1],), "int32", np.float32([0.0002]), np.zeros(1, np.int64),
                            rng.integers(-300, 300, sizes[1]))
            ys.append(b.act((1, sizes[1]), 0.06, -2))
            b.op("FULLY_CONNECTED", [x, w, bias], [ys[-1]], "FullyConnectedOptions")
        z = b.act((1, sizes[1]), 0.1, 0)
        b.op("ADD", ys, [z], "AddOptions")
        path.write_bytes(b.build([x], [z]))
    else:
        path.write_bytes(fc_chain(3, sizes))
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    return graph


def test_scratch_over_a_dying_input_is_pinned_at_its_offset(tmp_path):
    """A node's reserved scratch that its kernel may write over its first input (``scratch_over_input``: the
    speed dense kernel widening its int8 input in place) starts at that input's offset when the input dies
    at the node: the arena holds the larger of the two, not both. Not when the input is read later, nor over
    a caller-owned (const) model input."""
    from edgekit.ir.planner import scratch_in_place

    graph = _fc_graph(tmp_path, (640, 128, 8))
    first = graph.nodes[0].name
    x, y = graph.tensors[graph.nodes[0].inputs[0]], graph.tensors[graph.nodes[0].outputs[0]]
    assert (x.nbytes, y.nbytes) == (640, 128)
    apart = plan_memory(graph, scratch={first: 1280})
    over = plan_memory(graph, scratch={first: 1280}, scratch_over_input={first})
    check_plan(apart), check_plan(over)
    assert apart.arena_bytes == 640 + 1280 + 128 and not scratch_in_place(apart, graph, 0)
    assert over.arena_bytes == over.lower_bound == 1280 + 128 and scratch_in_place(over, graph, 0)
    assert over.scratch[0] == (over.placements[x.name].offset, 1280)
    assert over.pinned == {f"{first}:scratch": x.name}
    # the caller's input is const: the scratch goes beside it
    caller = plan_memory(graph, "caller", scratch={first: 1280}, scratch_over_input={first})
    check_plan(caller)
    assert not scratch_in_place(caller, graph, 0) and not caller.pinned
    # an input a later node reads too keeps its bytes
    fork = _fc_graph(tmp_path, (64, 16), fork=True)
    name = fork.nodes[0].name
    assert fork.nodes[1].inputs[0] == fork.nodes[0].inputs[0]
    plan = plan_memory(fork, scratch={name: 128}, scratch_over_input={name})
    check_plan(plan)
    assert not scratch_in_place(plan, fork, 0) and not plan.pinned
