"""The model input and output inside the planned arena (``--io-buffers arena``, the default) or in the
caller's buffers (``--io-buffers caller``): bit-exact in both modes, the input's bytes reused, the peak
RAM each mode needs, the documented C API (docs/c-api.md) compiles and computes the simulator's outputs."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.export import export
from edgekit.errors import EdgekitError
from edgekit.fuzz import tflite_gen
from edgekit.frontends.tflite.importer import import_tflite
from edgekit.ir.graph import Graph
from edgekit.ir.operators import get_op
from edgekit.ir.passes import run_default_passes
from edgekit.ir.planner import check_plan, plan_memory
from edgekit.sim import simulate

from helpers.fixed_models import fixed_mlp
from helpers.opcheck import QonnxCase

DOC = Path(__file__).resolve().parents[1] / "docs" / "c-api.md"

#: conv, depthwise, residual (also over its own input), concat, dense, an in-place chain
MODELS = ("conv2d_3x3_pad", "depthwise_3x3", "residual_add", "residual_of_own_input", "concat",
          "head_flatten_linear", "inplace_dw_pw_chain")


@pytest.mark.parametrize("io_buffers", ["arena", "caller"])
@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_in_both_modes(name, io_buffers, tmp_path):
    model = QonnxCase.named(name).export(tmp_path)
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "b", io_buffers=io_buffers)
    m = res.manifest
    assert m.io_buffers == io_buffers and m.memory_plan["io"] == io_buffers
    rep = verify(tmp_path / "b", count=24, seed=3)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].elements > 0 and stages[stage].mismatches == 0, rep.table()
    # the harness wrote the input where the build put it: the arena it touched is the arena planned
    assert m.arena_bytes - 3 <= rep.memory["arena_touched_bytes"] <= m.arena_bytes
    graph = Graph.load(tmp_path / "b")
    io = graph.tensors[graph.inputs[0]].nbytes + graph.tensors[graph.outputs[0]].nbytes
    assert rep.memory["io_buffer_bytes"] == (0 if io_buffers == "arena" else io)
    assert rep.memory["peak_ram_bytes"] == m.arena_bytes + rep.memory["io_buffer_bytes"] + \
        rep.memory["inference_stack_bytes"]
    header = (tmp_path / "b" / "src" / "model.h").read_text()
    assert f"#define EK_IO_IN_ARENA {int(io_buffers == 'arena')}" in header
    assert ("ek_input_t *ek_model_input(void);" in header) == (io_buffers == "arena")


def test_in_arena_costs_less_where_the_input_is_large(tmp_path):
    """A 3x16x16 input read by one 3x3 conv into 2 channels: in the caller's buffer the input's 768 bytes
    come on top of the arena; in the arena they are dead once the conv has read them, and the next layer
    takes them. (The next layer is depthwise: two regular convs would run row-fused, the input live
    until both end; tests/test_row_fusion.py.)"""
    case = QonnxCase("big_input", _big_input_model, (3, 16, 16))
    model = case.export(tmp_path)
    arena = build(model, "cortex-m4", "mps2-an386", tmp_path / "a").manifest
    caller = build(model, "cortex-m4", "mps2-an386", tmp_path / "c", io_buffers="caller").manifest
    assert arena.io_buffers == "arena" and caller.io_buffers == "caller"
    peak_arena = arena.memory["arena_bytes"] + arena.memory["io_buffer_bytes"]
    peak_caller = caller.memory["arena_bytes"] + caller.memory["io_buffer_bytes"]
    assert arena.memory["io_buffer_bytes"] == 0 and caller.memory["io_buffer_bytes"] == 3 * 16 * 16 + 4 * 6 * 6
    assert peak_arena < peak_caller, (peak_arena, peak_caller)
    # the input's bytes hold a later tensor: some arena buffer overlaps them after the input is dead, or the
    # row-fused depthwise output pinned over it (written behind the conv's reads, ir/planner.py)
    plan = arena.memory_plan["tensors"]
    name = Graph.load(tmp_path / "a").inputs[0]
    x = plan[name]
    pinned = arena.memory_plan.get("pinned", {})
    later = [t for t, p in plan.items() if (p["first"] > x["last"] or pinned.get(t) == name)
             and p["offset"] < x["offset"] + x["size"] and x["offset"] < p["offset"] + p["size"]]
    assert later


def _big_input_model():
    from helpers.brevitas_models import Seq, qconv2d, qid

    return Seq(qconv2d(3, 2, 3), qid(), qconv2d(2, 4, 3, stride=2, groups=2))


def _c_examples() -> dict[str, str]:
    """The complete programs of docs/c-api.md, by the mode they are written for."""
    blocks = re.findall(r"```c\n(.*?)```", DOC.read_text(), re.S)
    programs = [b for b in blocks if "int main(void)" in b]
    return {("arena" if "ek_model_input()" in p else "caller"): p for p in programs}


def test_docs_c_examples_compile_and_compute_the_model(tmp_path):
    """Each documented program compiles strictly against a build of its mode and prints the simulator's
    outputs for the input it writes (every code the zero point)."""
    examples = _c_examples()
    assert set(examples) == {"arena", "caller"}
    onnx = fixed_mlp(tmp_path / "fixed.onnx")
    for mode, program in examples.items():
        b = tmp_path / mode
        build(onnx, "cortex-m4", "mps2-an386", b, io_buffers=mode)
        (b / "main.c").write_text(program)
        exe = b / "example"
        cc = tc.host_cc()
        proc = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-I", str(b / "src"),
                               str(b / "main.c"), str(b / "src" / "model.c"), "-o", str(exe)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        got = np.array([int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                                                       timeout=60).stdout.split()])
        graph = Graph.load(b)
        x = graph.tensors[graph.inputs[0]]
        codes = np.full((1,) + tuple(x.shape), x.zero_point, dtype=np.dtype(x.dtype))
        want = simulate(graph, codes)[graph.outputs[0]].reshape(-1)
        assert np.array_equal(got, want.astype(np.int64)), (mode, got, want)
        # the exported project's README shows the call of its own mode, and that snippet compiles
        snippet = re.search(r"```c\n(.*?)```", (export(b, tmp_path / f"{mode}-project") / "README.md").read_text(),
                            re.S).group(1)
        include, body = snippet.split("\n", 1)
        (b / "snippet.c").write_text(f"{include}\nvoid example(void);\nvoid example(void)\n{{\n{body}}}\n")
        # a sketch, not a program: its input is left unwritten and its output unread
        proc = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wno-unused-variable",
                               "-Wno-uninitialized", "-Wno-maybe-uninitialized", "-c", "-I", str(b / "src"), str(b / "snippet.c"), "-o", str(b / "snippet.o")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (mode, snippet, proc.stderr)


def test_planner_never_overlaps_the_input_while_it_is_read(tmp_path):
    """Random int8 graphs (edgekit fuzz's TFLite generator: convolutions, depthwise, pooling, dense layers,
    residual adds, concatenations): with the input in the arena, no other buffer's bytes overlap the
    input's before its last reader has run; a tensor that shares the input's buffer is a reshape of it or
    the output of its last reader, written in place over it as the operator allows."""
    checked = 0
    for seed in range(80):
        spec = tflite_gen.random_spec(seed)
        if tflite_gen.check_shapes(spec) is not None:
            continue
        path = tflite_gen.export(spec, tmp_path / f"g{seed}.tflite")
        try:
            graph, _ = import_tflite(path)
        except EdgekitError:  # a documented refusal: not a graph to plan
            continue
        run_default_passes(graph)
        plan = plan_memory(graph, "arena")
        check_plan(plan)
        x = plan.placements[graph.inputs[0]]
        assert x.buffer == "arena" and x.first == -1
        readers = [i for i, n in enumerate(graph.nodes) if any(plan.placements.get(t) is x for t in n.inputs)]
        # alive until its last reader (a row-fused producer reads until its consumer ends, ir/planner.py), or
        # after the last node when the output was written in place over it
        last_read = max(readers)
        fusion = plan.fusion_of(graph.nodes[last_read].name)
        if fusion is not None and fusion.producer == graph.nodes[last_read].name:
            last_read += 1
        assert x.last == (len(graph.nodes) if plan.placements[graph.outputs[0]] is x else last_read)
        for name, p in plan.placements.items():
            if name == graph.inputs[0]:
                continue
            if p is x:  # shares the input's buffer
                producer = next(i for i, n in enumerate(graph.nodes) if name in n.outputs)
                node = graph.nodes[producer]
                op = get_op(node.op, node.name)
                if not op.alias:
                    assert producer >= max(i for i, n in enumerate(graph.nodes) if graph.inputs[0] in n.inputs)
                    assert any(plan.placements.get(t) is x for t in op.inplace_inputs(node, graph)), (seed, name)
                continue
            overlap = p.offset < x.offset + x.size and x.offset < p.offset + p.size
            # a row-fused depthwise output pinned over the input (ir/planner.py RowFusion.over_input): its
            # schedule was replayed to prove every byte is written after its last read (tests/test_row_fusion.py)
            pinned = plan.pinned.get(p.tensor) == graph.inputs[0] and p.offset == x.offset
            assert not overlap or p.first > x.last or pinned, (seed, name)
        checked += 1
    assert checked >= 30, checked
