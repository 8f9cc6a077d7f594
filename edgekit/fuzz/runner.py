"""One fuzz case: a spec through export, ``build`` and ``verify`` (and optionally the FPGA path),
classified as ok / refused(class) / mismatch(stage) / crash(stage) / internal / generator.

* refused: ``build`` raised a user-facing error that is not a tool failure; the class is
  the documented limit it matches (:mod:`edgekit.fuzz.limits`).
* mismatch: a stage that must be exact differs from the simulator.
* crash: a compiler, the host runner or the firmware failed (a tool error), or ``verify``
  could not run a stage.
* internal: anything else escaped (what the CLI reports as "internal error", exit 3).
* generator: the fuzzer could not export its own graph (a bug in the fuzzer, reported
  apart so that it never hides among edgekit's results).
"""
from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import qonnx_gen, tflite_gen
from .limits import refusal_class

GENERATORS = {"qonnx": qonnx_gen, "tflite": tflite_gen}

# Boards QEMU emulates, one per core.
EMULATED_BOARDS = {"microbit": "cortex-m0plus", "mps2-an385": "cortex-m3", "mps2-an386": "cortex-m4",
                   "mps2-an500": "cortex-m7", "mps2-an505": "cortex-m33", "mps3-an547": "cortex-m55"}

# The FPGA board --fpga builds for: the C-simulation does not depend on it.
FPGA_BOARD = "pynq-z2"

STATUSES = ("ok", "refused", "mismatch", "crash", "internal", "generator")

# --optimize objectives of an optimized-kernel build (backends/cortexm/kernels/base.py OPTIMIZE); a spec
# records its own ("optimize", "flash_goal_scale") so that `edgekit fuzz --spec` rebuilds it the same way.
OPTIMIZE_MODES = ("size", "balanced", "speed")
DEFAULT_OPTIMIZE = "balanced"


@dataclass
class Outcome:
    status: str  # one of STATUSES
    where: str = ""  # refusal class, or the stage that mismatched or crashed
    message: str = ""
    seconds: float = 0.0
    stages: list = field(default_factory=list)  # (stage, mismatches, elements, must be exact)
    # how the Cortex-M build was made: optimize, flash_goal (bytes, when tightened), flash (the firmware's
    # whole flash) and kernels (variant -> layers), so a campaign shows which kernel paths it reached
    build: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("mismatch", "crash", "internal")

    @property
    def key(self) -> str:
        return f"{self.status}:{self.where}" if self.where else self.status

    def to_json(self) -> dict:
        return asdict(self)


def case_spec(seed: int, tflite_share: float = 0.25, max_layers: int = 5, fpga: bool = False,
              wide: bool = False) -> dict:
    """The spec of case ``seed``: a TFLite graph for a ``tflite_share`` of the seeds, else QONNX;
    with ``fpga``, a QONNX graph in what the FPGA backend builds; ``wide``: TFLite graphs with 8-64
    channels per convolution (tflite_gen.WIDE_CHANNELS)."""
    import random

    if fpga:
        return qonnx_gen.random_fpga_spec(seed, max_layers)
    kind = "tflite" if random.Random(seed ^ 0x5EED).random() < tflite_share else "qonnx"
    if kind == "tflite" and wide:
        return tflite_gen.random_spec(seed, max_layers, wide=True)
    return GENERATORS[kind].random_spec(seed, max_layers)


def describe(spec: dict) -> str:
    return GENERATORS[spec["kind"]].describe(spec)


def check_shapes(spec: dict) -> str | None:
    return GENERATORS[spec["kind"]].check_shapes(spec)


def model_file(spec: dict, folder: Path) -> Path:
    """Write the spec's model (QONNX or .tflite) into ``folder``."""
    name = "model.tflite" if spec["kind"] == "tflite" else "model.onnx"
    return GENERATORS[spec["kind"]].export(spec, Path(folder) / name)


def fuzz_inputs(graph, count: int, seed: int) -> np.ndarray:
    """verify's generated inputs (every code, ties, saturation) plus vectors far outside the
    input range: +-1e3 and +-1e30 times its span, and a mixture of both signs."""
    from ..stages import generate_inputs

    x = generate_inputs(graph, max(count, 3), seed)
    iq = graph.input_quant
    span = max(abs((iq.qmax - iq.zero_point) * iq.scale), abs((iq.qmin - iq.zero_point) * iq.scale), 1e-30)
    rng = np.random.default_rng(seed + 1)
    shape = x.shape[1:]
    far = [np.full(shape, v * span) for v in (1e3, -1e3, 1e30, -1e30)]
    far.append(rng.choice([-1e6, 1e6], size=shape) * span)
    return np.concatenate([x, np.asarray(far, np.float32).reshape((-1,) + shape)]).astype(np.float32)


def run_case(spec: dict, work: Path, board: str = "mps2-an386", kernels: str = "optimized", count: int = 24,
             fpga: bool = False) -> Outcome:
    """Export ``spec`` into ``work``, build it for ``board`` and verify it through every stage."""
    from ..errors import EdgekitError

    t0 = time.monotonic()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = model_file(spec, work)
    except Exception as e:  # the fuzzer's own graph failed to export
        return Outcome("generator", type(e).__name__, _one_line(e), time.monotonic() - t0)
    try:
        out = _run_cortexm(model, work, board, kernels, count, spec["seed"], spec.get("optimize", DEFAULT_OPTIMIZE),
                           spec.get("flash_goal_scale"))
        if out.status == "ok" and fpga and spec["kind"] == "qonnx":
            fpga_out = _run_fpga(model, work, count, spec["seed"])
            fpga_out.stages = out.stages + fpga_out.stages
            out = fpga_out
    except EdgekitError as e:  # user-facing errors escaping outside build/verify: a bug in edgekit
        out = Outcome("internal", type(e).__name__, _one_line(e))
    except Exception as e:
        out = Outcome("internal", type(e).__name__, _one_line(e) + "\n" + traceback.format_exc(limit=-4))
    out.seconds = round(time.monotonic() - t0, 2)
    return out


def _classify_build_error(e: Exception, backend: str) -> Outcome:
    from ..errors import EdgekitError, ToolchainError

    msg = _one_line(e)
    if isinstance(e, ToolchainError):  # the C compiler or a runner failed on what build generated
        stage = "compile" if "compil" in msg else "tool"
        return Outcome("crash", f"{backend} build ({stage})", _first_error(str(e)) + "\n" + str(e)[-3000:])
    if isinstance(e, EdgekitError):
        return Outcome("refused", refusal_class(msg), msg)
    return Outcome("internal", f"{backend} build ({type(e).__name__})",
                   msg + "\n" + traceback.format_exc(limit=-4))


def _classify_verify_error(e: Exception, backend: str) -> Outcome:
    from ..errors import ToolchainError, VerificationError

    msg = str(e)
    if isinstance(e, ToolchainError):
        stage = "firmware" if ("firmware" in msg or "qemu" in msg.lower()) else "host" if "host" in msg else "tool"
        return Outcome("crash", f"{backend} verify ({stage})", msg[-3000:])
    if isinstance(e, VerificationError):
        return Outcome("crash", f"{backend} verify", msg[-3000:])
    return Outcome("internal", f"{backend} verify ({type(e).__name__})",
                   _one_line(e) + "\n" + traceback.format_exc(limit=-4))


def _stages_outcome(rep, prefix: str = "") -> Outcome:
    stages = [(s.stage, s.mismatches, s.elements, s.must_be_exact) for s in rep.stages]
    bad = [s for s in rep.stages if s.must_be_exact and s.mismatches]
    if bad:
        s = bad[0]
        return Outcome("mismatch", prefix + s.stage, f"{s.mismatches}/{s.elements} elements differ, up to "
                       f"{s.max_lsb} LSB", stages=stages)
    return Outcome("ok", stages=stages)


@contextmanager
def tightened_flash_goal(goal_bytes: int, graph):
    """The default flash goal (backends/cortexm/kernels/registry.py flash_goal_bytes) of ``graph`` set to
    ``goal_bytes`` while the block runs, by its code allowance (FLASH_GOAL_CODE), as tests/test_flash_goal.py
    forces it: small fuzz graphs meet the default goal with int16 weights, so without it balanced never takes
    the int8, compact and lean layouts nor conv2d_gemm_widen, and size never the lean ones."""
    from ..backends.cortexm.kernels import registry

    saved = registry.FLASH_GOAL_CODE
    registry.FLASH_GOAL_CODE = goal_bytes - int(registry.FLASH_GOAL_PARAMS * registry.int8_parameter_bytes(graph))
    try:
        yield
    finally:
        registry.FLASH_GOAL_CODE = saved


def _build_facts(result, optimize: str | None, goal: int | None) -> dict:
    from collections import Counter

    m = result.manifest
    return {"optimize": optimize, "flash_goal": goal, "flash": (m.memory_breakdown or {}).get("flash", {}).get("total"),
            "kernels": dict(Counter((m.kernel_variants or {}).values()))}


def _run_cortexm(model: Path, work: Path, board: str, kernels: str, count: int, seed: int,
                 optimize: str = DEFAULT_OPTIMIZE, flash_goal_scale: float | None = None) -> Outcome:
    """Build (``optimize`` for optimized kernels) and verify. With ``flash_goal_scale`` F the graph is built
    twice: once at the default flash goal, then with the goal set to F x that firmware's flash; the second
    build is the one verified."""
    from ..build import build
    from ..ir.graph import Graph
    from ..verify import verify

    bdir = work / "build"
    opt = optimize if kernels == "optimized" else None
    goal = None
    try:
        result = build(model, EMULATED_BOARDS[board], board, bdir, kernels=kernels, optimize=opt)
        if flash_goal_scale is not None and opt in ("size", "balanced"):
            goal = int(flash_goal_scale * result.manifest.memory_breakdown["flash"]["total"]) - 1
            with tightened_flash_goal(goal, Graph.load(bdir)):
                result = build(model, EMULATED_BOARDS[board], board, bdir, kernels=kernels, optimize=opt)
    except Exception as e:
        out = _classify_build_error(e, "cortex-m")
        out.build = {"optimize": opt, "flash_goal": goal}
        return out
    facts = _build_facts(result, opt, goal)
    try:
        graph = Graph.load(bdir)
        x = fuzz_inputs(graph, count, seed)
        np.save(work / "inputs.npy", x)
        rep = verify(bdir, inputs=x)
    except Exception as e:
        out = _classify_verify_error(e, "cortex-m")
        out.build = facts
        return out
    out = _stages_outcome(rep)
    out.build = facts
    if out.status == "ok":
        bad = _saturation_error(graph, x)
        if bad:
            return Outcome("mismatch", "input quantizer (saturation)", bad, stages=out.stages, build=facts)
    return out


def _saturation_error(graph, x: np.ndarray) -> str:
    """The input quantizer must saturate: the all +1e3/+1e30 (-1e3/-1e30) spans vectors of
    :func:`fuzz_inputs` become the highest (lowest) code everywhere. Every stage gets the same
    codes from it, so only this check sees a wrong one."""
    from ..sim import quantize_input

    iq = graph.input_quant
    codes = quantize_input(graph, x[-5:-1])
    for row, (v, want) in enumerate([(1e3, iq.qmax), (-1e3, iq.qmin), (1e30, iq.qmax), (-1e30, iq.qmin)]):
        got = np.unique(codes[row])
        if got.tolist() != [want]:
            return f"{v:+g} x the input span quantizes to {got.tolist()}, expected {want}"
    return ""


def _run_fpga(model: Path, work: Path, count: int, seed: int) -> Outcome:
    from ..build import build
    from ..ir.graph import Graph
    from ..verify import verify

    bdir = work / "fpga"
    try:
        build(model, "fpga", FPGA_BOARD, bdir)
    except Exception as e:
        out = _classify_build_error(e, "fpga")
        if out.status == "refused":
            out.where = "fpga: " + out.where
        return out
    try:
        rep = verify(bdir, inputs=fuzz_inputs(Graph.load(bdir), count, seed))
    except Exception as e:
        return _classify_verify_error(e, "fpga")
    return _stages_outcome(rep, "fpga ")


def _first_error(text: str) -> str:
    """The compiler's first ``error:`` line (what failed), else the text's first line."""
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()[:300]
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:500]
