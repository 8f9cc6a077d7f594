"""``edgekit verify``: run the same inputs through every stage and compare with the simulator.

Every build gets edgekit's integer simulator (the reference) and the reference stage: qonnx's
execution of the cleaned model (float32), or TFLite Micro's interpreter for a ``.tflite``
build. The backend that made the build adds its own stages (edgekit.backends.base.Backend:
Cortex-M: the generated C on the host and the firmware on the emulated board; FPGA:
hls4ml's C-simulation). Outputs are compared as integer codes; a stage that the contract
says must be exact and differs makes the verification fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backends import backend_named
from .backends.base import VerifyContext
from .errors import VerificationError
from .ir.graph import Graph
from .manifest import load_manifest
from .pages import VERIFY_RECORD, write_page
from .progress import track
from .sim import quantize_input, simulate
from .stages import (StageResult, VerifyReport, check_timeout, compare, load_codes, load_float_inputs,
                     power_of_two_model, qonnx_stage, run_tflite_reference, tflite_reference_available)

REFERENCE_STAGE = "qonnx"


def _reference_stage(ctx: VerifyContext) -> StageResult:
    """qonnx's float execution, or TFLite Micro for a TFLite build, compared with the simulator."""
    if ctx.manifest.frontend == "tflite":
        if not tflite_reference_available():
            return StageResult("tflite reference", False, 0, 0, 0, "skipped: no TFLite Micro interpreter "
                               "(pip install tflite-micro, x86-64 Linux)")
        got = run_tflite_reference(ctx.build_dir / "model.tflite", ctx.codes, ctx.graph, floats=ctx.floats)
        return compare("tflite reference", got, ctx.reference, True, "TFLite Micro interpreter")
    if ctx.floats is None:
        return StageResult("qonnx (float32)", False, 0, 0, 0, "skipped: input codes bypass the input quantizer")
    return qonnx_stage(ctx.build_dir / "model.onnx", ctx.graph, ctx.floats, ctx.reference, ctx.power_of_two)


def verify(build_dir: str | Path, inputs: str | Path | np.ndarray | None = None, count: int = 256,
           seed: int = 0, stages: tuple[str, ...] | None = None, codes: str | Path | np.ndarray | None = None,
           *, skip: tuple[str, ...] = (), timeout: float | None = None) -> VerifyReport:
    """Run inputs through every stage. ``inputs`` are floats (quantized by the model's input
    quantizer); ``codes`` are raw integer input codes used as they are (e.g. TFLite goldens).

    ``stages``: the stages to run (default: all of the build's: "qonnx", the reference stage,
    then the backend's, e.g. "host" and "qemu"), minus ``skip``. ``timeout``: seconds each
    stage may run (default: a limit that scales with the model's work and the vectors).
    """
    build_dir = Path(build_dir).resolve()  # the runners execute in temporary directories
    manifest = load_manifest(build_dir)
    backend = backend_named(manifest.backend)
    known = (REFERENCE_STAGE,) + backend.verify_stages
    for s in (*(stages or ()), *skip):
        if s not in known:
            raise VerificationError(f"verify has no stage '{s}' for {backend.build_kind}; its stages: "
                                    f"{', '.join(known)}")
    stages = tuple(s for s in (known if stages is None else stages) if s not in skip)
    if codes is not None and inputs is not None:
        raise VerificationError("give float inputs or input codes, not both")
    check_timeout(timeout)
    backend.check_verify(manifest, stages, inputs is not None, codes is not None)

    graph = Graph.load(build_dir)
    if codes is not None:
        codes, source = load_codes(graph, codes)
        x = None
    else:
        x, source = load_float_inputs(graph, inputs, count, seed)
        codes = quantize_input(graph, x)
    n = int(codes.shape[0])
    ref = simulate(graph, codes)[graph.outputs[0]].reshape(n, -1)
    ctx = VerifyContext(build_dir, manifest, graph, x, codes, ref, source, power_of_two_model(graph), timeout)
    results = [StageResult("simulator", True, int(ref.size), 0, 0, "reference")]
    todo = [s for s in known if s in stages]
    for s in track(todo, f"verify {build_dir.name}: {', '.join(todo)}"):
        results.append(_reference_stage(ctx) if s == REFERENCE_STAGE else backend.run_stage(s, ctx))
    report = backend.verify_report(ctx, results)
    _record(build_dir, report)
    return report


def _record(build_dir: Path, report: VerifyReport) -> None:
    """Keep the result in the build directory (verify.json) for its report page. A directory
    that cannot be written (read-only media) is verified all the same: the record is a copy of
    what verify prints, not part of the result."""
    try:
        write_page(build_dir / VERIFY_RECORD, json.dumps(report.to_json(), indent=1))
    except OSError:
        pass
