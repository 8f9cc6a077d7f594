"""``edgekit profile``: exact instruction counts per inference and per layer on an emulated
board, a per-core cycle estimate, and where flash and RAM go.

How it counts (docs/targets-and-profiling.md has the full definition):

* The firmware runs on QEMU with edgekit's TCG plugin (``qemu_plugin/ek_insn.c``), which
  counts every executed guest instruction; QEMU's translation does not depend on timing,
  so the counts are exact and repeatable.
* **One inference** is one call of ``ek_model_run``: from its first instruction up to and
  including the instruction that returns to the caller (``main`` in the harness). The
  harness's own instructions (semihosting I/O, the loop) are not counted.
* **Per layer**: every layer is an out-of-line function ``ek_layer<N>_<name>`` (GCC may
  add ``.constprop.0`` and the like). An instruction counts for the layer whose code ran
  last, so helpers a layer calls (libgcc, memcpy) count for that layer; instructions of
  ``ek_model_run`` itself form the **glue** row. The rows add up exactly to the inference.
* **Cycles** are an *estimate*: each executed instruction is classified from the
  disassembly (ALU, multiply, MAC, long multiply, divide, SIMD, load, store, load/store
  multiple, branch, call, FPU, MVE, other) and costed with the core's ``[timing]`` table;
  a branch that was taken (the next instruction was not the following address) adds the
  core's refill penalty. Wait states, caches, stalls between dependent instructions and
  dual issue beyond the table's averages are not modelled. ms = cycles / the board's clock.

The package: ``runner`` (the board, the firmware, the plugin run), ``classifier`` (instruction
classes and their cost), ``report`` (the table, profile.json/.html, the manifest's summary);
:func:`profile` here ties them together.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ....arrays import load_npy
from ....errors import BuildDirError, TargetError, ToolchainError, VerificationError
from ....ir.graph import Graph
from ....manifest import load_manifest
from ....progress import step
from ....sim import quantize_input, simulate
from ....targets import get_core
from .. import toolchain as tc
from ..memory import breakdown
from ..verify import time_limit
from .classifier import disassembly
from .report import ProfileReport, profile_data, write_profile
from .runner import build_board, firmware_for, profile_boards_for, profile_inputs, run_counted, zones_for

#: QEMU with the counting plugin runs this many times slower at most than without it
PLUGIN_SLOWDOWN = 2.5


def profile(build_dir: str | Path, board: str | None = None, inputs: str | Path | np.ndarray | None = None,
            count: int = 8, seed: int = 0, vector: int = 0, write: bool = True) -> ProfileReport:
    """Count instructions per inference and per layer for a build; write profile.json/.html."""
    build_dir = Path(build_dir).resolve()
    manifest = load_manifest(build_dir)
    candidates = profile_boards_for(manifest, board)
    est_board = build_board(manifest)
    core = get_core(manifest.target)
    graph = Graph.load(build_dir)
    layers = manifest.layers

    if inputs is None:
        codes, source = profile_inputs(graph, count, seed), f"uniform random input codes, seed {seed}"
    else:
        x = load_npy(inputs, "float inputs", VerificationError) if not isinstance(inputs, np.ndarray) else inputs
        fshape = tuple(graph.input_quant.float_shape)
        if np.size(x) % max(1, int(np.prod(fshape))) or not np.issubdtype(np.asarray(x).dtype, np.number):
            raise VerificationError(f"{inputs if not isinstance(inputs, np.ndarray) else 'inputs'}: shape "
                                    f"{np.shape(x)} does not hold whole samples of ({', '.join(map(str, fshape))})")
        x = np.asarray(x, np.float32).reshape((-1,) + fshape)
        codes, source = quantize_input(graph, x).reshape(x.shape[0], -1), str(inputs) if not isinstance(
            inputs, np.ndarray) else "array"
    if not 0 <= vector < codes.shape[0]:
        raise VerificationError(f"--vector {vector}: there are {codes.shape[0]} input vectors")
    ref = simulate(graph, codes.reshape((codes.shape[0],) + tuple(graph.tensors[graph.inputs[0]].shape)))
    ref = ref[graph.outputs[0]].reshape(codes.shape[0], -1)
    out_t = graph.tensors[graph.outputs[0]]

    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as d:
        work = Path(d)
        for i, run_board in enumerate(candidates):
            try:
                elf = firmware_for(build_dir, manifest, run_board, work)
                break
            except TargetError:
                if i == len(candidates) - 1:
                    raise
        syms = tc.symbols(elf)
        zones, layer_zone = zones_for(syms, layers)
        main = [s for s in syms if s["name"] == "main"]
        if not main:
            raise BuildDirError("the firmware has no main (harness) symbol")
        text = [s for s in syms if s["type"] in "tT"]
        code = (min(s["addr"] for s in text), max(s["addr"] + max(s["size"], 2) for s in text))
        codes.astype(np.dtype(manifest.input["dtype"])).tofile(work / "inputs.bin")
        t0 = time.monotonic()
        with step(f"profile: counting instructions on {run_board.name} (QEMU)"):
            counts = run_counted(elf, run_board.qemu_machine, work, zones, code, start=zones[0].lo,
                                 stop=(main[0]["addr"], main[0]["addr"] + main[0]["size"]), detail=vector,
                                 timeout=PLUGIN_SLOWDOWN * time_limit(manifest, codes.shape[0]))
        seconds = time.monotonic() - t0
        got = np.fromfile(work / "outputs.bin", dtype=np.dtype(out_t.dtype))
        insns = disassembly(elf, *code, arch=core.arch if core.has_mve else None)  # objdump names only some
        mem = breakdown(elf)
    if got.size != ref.size or np.any(got.reshape(ref.shape).astype(np.int64) != ref.astype(np.int64)):
        raise VerificationError("the profiled firmware's outputs differ from the simulator; run `edgekit verify`")
    if len(counts.windows) < codes.shape[0]:
        raise ToolchainError(f"counted {len(counts.windows)} inferences for {codes.shape[0]} input vectors")
    # The harness calls ek_model_run once per vector, in order, then once more on the first
    # vector to measure the arena it touches: that extra call is not one of the vectors.
    counts.windows = counts.windows[:codes.shape[0]]

    report = profile_data(build_dir, manifest, core, run_board, est_board, layers, zones, layer_zone, counts, insns,
                     vector, source, mem)
    report["seconds"] = round(seconds, 3)
    keys = {"EK_STACK_USED": "stack_used", "EK_INFERENCE_STACK": "inference_stack", "EK_ARENA_TOUCHED": "arena_touched"}
    for line in counts.log.splitlines():
        key, _, value = line.partition("=")
        if key in keys and value.strip().isdigit():
            report["memory"][keys[key]] = int(value)
    rep = ProfileReport(report)
    if write:
        write_profile(build_dir, rep)
    return rep


