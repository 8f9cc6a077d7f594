"""The same models, bit-exact with the simulator on every emulated board.

Each model from conftest.py (power-of-two and float-scale int8 MLPs) is built for every
QEMU board (Cortex-M3, M4, M7, M55 as the issue asks, plus the M33 on mps2-an505 and
Armv6-M code for the Cortex-M0+ on the micro:bit) and verified: host C and firmware must
equal the simulator in every element. The firmware outputs of all boards are then
compared with each other too.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.flash import flash

BOARDS = [("cortex-m3", "mps2-an385"), ("cortex-m4", "mps2-an386"), ("cortex-m7", "mps2-an500"),
          ("cortex-m55", "mps3-an547"), ("cortex-m33", "mps2-an505"), ("cortex-m0plus", "microbit")]
MODELS = ["pow2_onnx", "float_onnx"]
VECTORS = 64


@pytest.fixture(scope="module")
def builds(request, tmp_path_factory) -> dict:
    """(model, board) -> build dir, built on first use."""
    cache: dict = {}

    def get(model: str, target: str, board: str) -> Path:
        key = (model, board)
        if key not in cache:
            onnx = request.getfixturevalue(model)
            out = tmp_path_factory.mktemp("boards") / f"{model}-{board}"
            build(onnx, target, board, out)
            cache[key] = out
        return cache[key]

    return get


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target, board", BOARDS, ids=[b for _, b in BOARDS])
def test_bit_exact_on_every_emulated_board(builds, model, target, board):
    out = builds(model, target, board)
    rep = verify(out, count=VECTORS, seed=7, stages=("host", "qemu"))
    fw = next(s for s in rep.stages if s.stage.startswith("firmware"))
    assert fw.stage == f"firmware ({board})"
    assert fw.elements == VECTORS * 5 and fw.mismatches == 0, rep.table()
    assert rep.ok, rep.table()
    assert 0 < rep.memory["stack_used_bytes"] <= rep.memory["stack_bytes"]


@pytest.mark.parametrize("model", MODELS)
def test_every_board_computes_the_same_outputs(builds, model, tmp_path):
    """Run the same input codes through every board's firmware directly and compare the raw outputs."""
    from edgekit.ir.graph import Graph
    from edgekit.sim import quantize_input, simulate
    from edgekit.stages import generate_inputs

    outs = {}
    for target, board in BOARDS:
        b = builds(model, target, board)
        graph = Graph.load(b)
        codes = quantize_input(graph, generate_inputs(graph, 32, seed=11))
        work = tmp_path / board
        work.mkdir()
        codes.astype(np.int8).tofile(work / "inputs.bin")
        machine = {"microbit": "microbit"}.get(board, board)
        tc.run_qemu(b / "firmware.elf", machine, work)
        outs[board] = np.fromfile(work / "outputs.bin", dtype=np.int8)
    ref = simulate(graph, codes)[graph.outputs[0]].reshape(-1)
    for board, got in outs.items():
        assert got.size == ref.size and np.array_equal(got, ref.astype(np.int8)), board


@pytest.mark.parametrize("target, board", [("cortex-m55", "mps3-an547"), ("cortex-m4", "mps2-an386")])
def test_startup_enables_the_fpu_before_any_loop_at_o3(builds, target, board, tmp_path):
    """At -O3 GCC keeps the startup's copy/paint loops in FP/MVE registers (vldr d6 on the
    M55): the CPACR write must come first or the firmware faults before main. A firmware
    engineer may well build the exported project at -O3."""
    b = builds("pow2_onnx", target, board)
    from edgekit.targets import get_core

    elf = tmp_path / "o3.elf"
    srcs = [b / "src" / "model.c"] + [b / "firmware" / f for f in tc.FIRMWARE_SOURCES]
    subprocess.run([tc.arm_gcc(), *get_core(target).cflags, "-std=c99", "-O3", "-ffreestanding", "-nostdlib",
                    "-fno-tree-loop-distribute-patterns", f"-I{b / 'src'}", f"-I{b / 'firmware'}", *map(str, srcs),
                    f"-T{b / 'firmware' / 'link.ld'}", "-lgcc", "-o", str(elf)], check=True)
    rep = verify(b, count=16, stages=())  # reference outputs only
    from edgekit.ir.graph import Graph
    from edgekit.sim import quantize_input, simulate
    from edgekit.stages import generate_inputs

    graph = Graph.load(b)
    codes = quantize_input(graph, generate_inputs(graph, 16))
    codes.astype(np.int8).tofile(tmp_path / "inputs.bin")
    tc.run_qemu(elf, board, tmp_path)  # raises on a fault exit (100 + exception number)
    got = np.fromfile(tmp_path / "outputs.bin", dtype=np.int8)
    assert np.array_equal(got, simulate(graph, codes)[graph.outputs[0]].reshape(-1).astype(np.int8))
    assert rep.ok


def test_flash_on_an_emulated_board_runs_qemu(builds):
    lines = []
    res = flash(builds("pow2_onnx", "cortex-m7", "mps2-an500"), count=8, on_line=lines.append)
    assert res.tool == "qemu" and res.ok and res.vectors == 8 and res.mismatches == 0
    assert "EK_VECTORS=8" in lines and res.stack_used and res.stack_used > 0
    assert res.commands[0][1:3] == ["-M", "mps2-an500"]


def test_m0plus_code_is_armv6m(builds):
    """The micro:bit build really is Armv6-M code (the attributes of the compiled model)."""
    obj = builds("pow2_onnx", "cortex-m0plus", "microbit") / "obj" / "model.o"
    out = subprocess.run([tc._binutil("readelf"), "-A", str(obj)], capture_output=True, text=True).stdout
    assert "Tag_CPU_arch: v6S-M" in out and "Thumb-1" in out, out
