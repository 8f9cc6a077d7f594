"""The Cortex-M build: QONNX or int8 TFLite -> integer IR -> C sources -> host runner and firmware."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ...version import __version__
from ...builddir import BuildResult, prepare_out_dir, staged_build_dir
from ...errors import TargetError
from ...frontends.qonnx import import_qonnx
from ...ir.passes import run_default_passes
from ...ir.planner import DEFAULT_IO, IO_MODES, check_plan, plan_memory
from ...manifest import Manifest
from ...ir.operators import get_op
from ...targets import Board, resolve
from . import toolchain as tc
from ...progress import step
from .codegen import fusion_refusals, generate_c, scratch_over_input_requests, scratch_requests
from .kernels import registry as kernel_registry
from .kernels.base import DEFAULT_OPTIMIZE, OPTIMIZE
from .firmware import compile_firmware
from .memory import breakdown, fit_report, peak_ram, raise_if_over
from .profile.report import profile_summary
from .report import layer_kind, write_reports
from .stack import inference_stack_bytes

KERNELS = ("optimized", "reference")


def _layer_report(graph, plan, kernels: dict | None = None, choices: dict | None = None) -> list[dict]:
    rows = []
    for node in graph.nodes:
        op = get_op(node.op, node.name)
        out = graph.tensors[node.outputs[0]]
        p = plan.placements.get(node.outputs[0])
        rows.append({
            "name": node.name, "op": node.op, "kind": layer_kind(node),
            "input_shape": list(graph.tensors[node.inputs[0]].shape), "output_shape": list(out.shape),
            "output_dtype": out.dtype, "macs": op.macs(node, graph),
            "weight_bytes": sum(graph.constants[i].nbytes for i in node.inputs if i in graph.constants),
            "output_bytes": out.nbytes, "buffer": p.buffer if p else None,
            "arena_offset": p.offset if p and p.buffer == "arena" else None,
        })
        if kernels and node.name in kernels:
            rows[-1]["kernel"] = kernels[node.name]
        if choices and node.name in choices:  # what --optimize decided for its weights (codegen.optimize_choice)
            rows[-1]["optimize_choice"] = choices[node.name]
    return rows


def _check_fit(elf: Path, board: Board) -> dict:
    """Every memory region of the board with its use; refuses a model that overflows any of them."""
    report = fit_report(elf, board)
    raise_if_over(report, board)
    return report


def _firmware_flash(elf: Path) -> int:
    """Whole flash of a linked firmware (vectors, .text, .rodata, .data), as the flash goal counts it."""
    return breakdown(elf, tc.section_sizes(elf))["flash"]["total"]


def _compile_aside(graph, plan, tmp: Path, probe: Path, core, brd: Board, **generate) -> tuple[dict, Path]:
    """Generate and compile the model into ``probe`` (a try beside the build in ``tmp``) with generate_c's
    ``generate`` options; returns codegen's result and the firmware ELF."""
    if not (probe / "firmware").is_dir():
        shutil.copytree(tmp / "firmware", probe / "firmware")
    shutil.rmtree(probe / "src", ignore_errors=True)
    (probe / "src").mkdir()
    cg = generate_c(graph, plan, probe / "src", kernels="optimized", features=core.features, board=brd, **generate)
    return cg, compile_firmware(probe, core, brd, probe / "firmware" / "link.ld")


def _take_aside(tmp: Path, probe: Path, cg: dict, elf: Path) -> tuple[dict, Path]:
    """Keep the try compiled in ``probe``: its sources, objects and firmware replace the build's in ``tmp``."""
    for name in ("src", "obj"):
        shutil.rmtree(tmp / name, ignore_errors=True)
        shutil.move(str(probe / name), str(tmp / name))
    for f in probe.glob("firmware*"):
        if f.is_file():
            shutil.move(str(f), str(tmp / f.name))
    shutil.rmtree(probe)
    return cg, tmp / elf.name


#: a widen allowance no model reaches: int16 weights for every layer that has an int16 variant
WIDEN_ALL = 1 << 40


def _balanced_within_flash_goal(graph, plan, tmp: Path, core, brd: Board, codegen: dict, elf: Path,
                                attempts: int = 3) -> tuple[dict, Path]:
    """--optimize balanced against the default flash goal (kernels/registry.py flash_goal_bytes),
    measured on the linked firmware:

    * within the goal: spend what it leaves on int16 weights (the allowance grows by the measured
      slack while a layer left at int8 fits in it; a try over the goal is cut by its excess);
    * over it: compile aside the int8-weight layout with compact requantization records, and where
      that misses the goal too the leanest layouts (``lean``: compact records on every int8 GEMM,
      depthwise layers on dw3_compact's 18 bytes per channel and one shared body); if that meets the
      goal, take it and widen only within the bytes it leaves (cut by any excess, a few times, else
      none), so balanced never exceeds the goal where an int8 layout meets it. If it misses the goal
      too, the first build stays (narrowing would cost instructions without meeting the goal), unless
      int16 weights on every layer give a firmware no larger (small layers, where the int8 kernels'
      code outweighs the bytes their weights save).

    Allowances that would give a row-fused layer a kernel without row ranges are not tried."""
    goal = kernel_registry.flash_goal_bytes(graph)

    def fusable(allowance: int) -> bool:
        return not fusion_refusals(graph, plan, kernels="optimized", features=core.features, board=brd,
                                   optimize="balanced", widen_allowance=allowance)

    probe = tmp / "flash-goal-probe"  # the tries compile here; the build keeps the one it takes

    lean = False  # the layouts with the fewest flash bytes (codegen._compact_for_flash_goal)

    def compile_with(allowance: int, compact: bool):
        cg, out = _compile_aside(graph, plan, tmp, probe, core, brd, optimize="balanced",
                                 widen_allowance=allowance, compact_records=compact, lean=lean)
        return cg, out, _firmware_flash(out) - goal

    def take(cg: dict) -> tuple[dict, Path]:
        return _take_aside(tmp, probe, cg, elf)

    try:
        excess = first_excess = _firmware_flash(elf) - goal
        if excess <= 0:  # within the goal: widen into what it leaves
            best = (codegen, elf)
            allowance = codegen["balanced_widened_bytes"] - excess
            for _ in range(attempts):
                left = best[0]["balanced_smallest_left"]
                if left is None or allowance - best[0]["balanced_widened_bytes"] < left or not fusable(allowance):
                    break
                cg, _, excess = compile_with(allowance, False)
                if excess <= 0:
                    best = take(cg)
                    allowance = cg["balanced_widened_bytes"] - excess
                else:
                    allowance = min(allowance, cg["balanced_widened_bytes"]) - excess
            return best
        if not fusable(0):
            return codegen, elf
        narrow, _, excess = compile_with(0, True)
        if excess > 0:  # int8 weights and compact records miss it: the leanest layouts and shared code
            lean = True
            narrow, _, excess = compile_with(0, True)
        if excess > 0:  # unreachable even so: keep the first build, or int16 weights wherever they go if that
            # is no larger (on small layers the int8 kernels' code outweighs the int16 weight bytes it saves)
            if not fusable(WIDEN_ALL):
                return codegen, elf
            lean = False
            wide, _, wide_excess = compile_with(WIDEN_ALL, False)
            return take(wide) if wide_excess <= first_excess else (codegen, elf)
        allowance, tried = -excess, False
        for _ in range(attempts):
            if allowance <= 0 or not fusable(allowance):
                break
            cg, _, excess = compile_with(allowance, True)
            tried = True
            if excess <= 0:
                return take(cg)
            allowance = min(allowance - excess, cg["balanced_widened_bytes"] - excess)
        # int8 weights and compact records: they meet the goal (a later try replaced their sources)
        return take(compile_with(0, True)[0] if tried else narrow)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _size_within_flash_goal(graph, plan, tmp: Path, core, brd: Board, codegen: dict, elf: Path) -> tuple[dict, Path]:
    """--optimize size: int8 weights with compact records everywhere; where that still misses the default flash
    goal, the lean layouts balanced takes to meet it (dw3_compact, compact records on every int8 GEMM), compiled
    aside and kept if the firmware is smaller, so size is never larger than balanced."""
    flash = _firmware_flash(elf)
    if flash <= kernel_registry.flash_goal_bytes(graph):
        return codegen, elf
    probe = tmp / "flash-goal-probe"
    try:
        cg, out = _compile_aside(graph, plan, tmp, probe, core, brd, optimize="size", lean=True)
        if _firmware_flash(out) >= flash:
            return codegen, elf
        return _take_aside(tmp, probe, cg, elf)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def build_cortexm(model: Path, target: str, board: str | None, out_dir: Path, kernels: str,
                  optimize: str = DEFAULT_OPTIMIZE, io_buffers: str = DEFAULT_IO, fixed_input=None) -> BuildResult:
    """Compile a QONNX model (or an int8 ``.tflite`` model) for a Cortex-M core and board into ``out_dir``.

    ``kernels="optimized"`` uses the DSP-extension kernels (templates/cortexm/ops_dsp,
    docs/kernels.md) for the layers that fit them on cores that have it; ``"reference"`` keeps
    the portable reference kernels everywhere. Both compute the same integers. ``optimize``
    (size, balanced, speed) chooses int8- or int16-weight kernel variants (docs/kernels.md).
    ``io_buffers``: the model input and output inside the planned arena ("arena") or in the
    caller's buffers ("caller"); docs/c-api.md.
    """
    t0 = time.monotonic()
    if kernels not in KERNELS:
        raise TargetError(f"kernels '{kernels}': choose one of {', '.join(KERNELS)}")
    if optimize not in OPTIMIZE:
        raise TargetError(f"optimize '{optimize}': choose one of {', '.join(OPTIMIZE)}")
    if io_buffers not in IO_MODES:
        raise TargetError(f"io-buffers '{io_buffers}': choose one of {', '.join(IO_MODES)}")
    core, brd = resolve(target, board)
    prepare_out_dir(out_dir)
    tc.arm_gcc(), tc.arm_size(), tc.host_cc()  # fail before any work if a tool is missing

    if model.suffix.lower() == ".tflite":  # int8 TFLite flatbuffer (issue 6): edgekit/frontends/tflite.py
        from ...frontends.tflite.importer import import_tflite

        if fixed_input is not None:
            raise TargetError(f"{model}: --input-bits/--calibration apply to QONNX models; a .tflite model carries "
                              "its input quantizer")
        graph, cleaned = import_tflite(model)
    else:
        graph, cleaned = import_qonnx(model, fixed_input)
    run_default_passes(graph)
    plan = plan_memory(graph, io_buffers)
    excluded: set[str] = set()
    reserved: dict[str, int] = {}
    over_input: set[str] = set()  # reserved scratch that may start at the node's dying input (pinned over it)
    weighed: set[tuple[str, tuple[int, int]]] = set()
    choice = dict(kernels=kernels, features=core.features, board=brd, optimize=optimize)
    for _ in range(8):  # each round only adds exclusions or reservations; a few rounds settle it
        if refused := fusion_refusals(graph, plan, **choice) - excluded:
            excluded |= refused  # their kernels have no row ranges: plan without those fusions
        elif more := {n: b for n, b in scratch_requests(graph, plan, **choice).items() if reserved.get(n, 0) < b}:
            reserved.update(more)  # scratch that fits no gap nor the stack: keep arena bytes for it
        elif wide := {n: r for n, r in scratch_over_input_requests(graph, plan, **choice).items()
                      if (n, r) not in weighed}:
            weighed |= set(wide.items())  # weighed again only if its stack cost changes (another one moved)
            # scratch over a dying input (a dense layer's widened input): in the arena where it grows the arena
            # by no more than it would add to the stack (codegen.scratch_over_input_requests); the largest first
            for name, (need, stack_cost) in sorted(wide.items(), key=lambda kv: (-kv[1][0], kv[0])):
                trial = plan_memory(graph, io_buffers, exclude=excluded, scratch={**reserved, name: need},
                                    scratch_over_input=over_input | {name})
                if trial.arena_bytes - plan.arena_bytes <= stack_cost:
                    reserved[name] = need
                    over_input.add(name)
                    plan = trial
            continue
        else:
            break
        plan = plan_memory(graph, io_buffers, exclude=excluded, scratch=reserved, scratch_over_input=over_input)
    check_plan(plan)

    with staged_build_dir(out_dir) as tmp:
        if isinstance(cleaned, bytes):  # TFLite: the flatbuffer itself, for verify's TFLite reference stage
            (tmp / "model.tflite").write_bytes(cleaned)
        else:
            cleaned.save(str(tmp / "model.onnx"))
        graph.save(tmp)
        (tmp / "src").mkdir()
        codegen = generate_c(graph, plan, tmp / "src", kernels=kernels, features=core.features, board=brd,
                             optimize=optimize)
        tc.copy_firmware_sources(tmp / "firmware")
        tc.render_linker_script(core, brd, tmp / "firmware" / "link.ld")
        with step(f"build: compiling the firmware for {brd.name}") as say:
            elf = compile_firmware(tmp, core, brd, tmp / "firmware" / "link.ld")
            if kernels == "optimized" and optimize == "balanced":
                codegen, elf = _balanced_within_flash_goal(graph, plan, tmp, core, brd, codegen, elf)
            elif kernels == "optimized" and optimize == "size":
                codegen, elf = _size_within_flash_goal(graph, plan, tmp, core, brd, codegen, elf)
            say("build: compiling the host runner")
            tc.compile_host(tmp)
        sizes = tc.section_sizes(elf)
        usage = tc.memory_usage(sizes)
        fit = _check_fit(elf, brd)
        manifest = Manifest(
            edgekit_version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            source=str(model.resolve()),
            source_sha256=graph.meta["source_sha256"],
            frontend=graph.meta.get("frontend", "qonnx"),
            target=core.name,
            board=brd.name,
            qemu_machine=brd.qemu_machine,
            firmware="firmware.elf",
            host_runner="host/ek_host_runner",
            input={"tensor": graph.inputs[0], "float_shape": list(graph.input_quant.float_shape),
                   "dtype": graph.tensors[graph.inputs[0]].dtype},
            output={"tensor": graph.outputs[0], "shape": list(graph.tensors[graph.outputs[0]].shape),
                    "dtype": graph.tensors[graph.outputs[0]].dtype},
            macs=codegen["macs"],
            weight_bytes=codegen["weight_bytes"],
            arena_bytes=plan.arena_bytes,
            sections=sizes,
            memory=usage,
            memory_breakdown=breakdown(elf, sizes),
            fit=fit,
            board_description=brd.to_json(),
            kernels=kernels,
            optimize=optimize if kernels == "optimized" else None,
            layers=_layer_report(graph, plan, codegen["kernels"], codegen["kernel_choices"]),
            kernel_variants=codegen["kernel_variants"],
            kernel_fallbacks=codegen["kernel_fallbacks"],
            memory_plan=plan.to_json(),
            io_buffers=io_buffers,
            build_seconds=round(time.monotonic() - t0, 2),
        )
        manifest.memory["inference_stack_static_bytes"] = inference_stack_bytes(tmp / "obj" / "model.su",
                                                                                   codegen["shared_wrappers"],
                                                                                   codegen["layer_helpers"])
        manifest.memory.update(peak_ram(manifest, {}), arena_bytes=plan.arena_bytes)  # verify measures the stack
        notes = _carry_over(out_dir, tmp, manifest, elf)
        manifest.save(tmp)
        write_reports(manifest, tmp)
    return BuildResult(out_dir, manifest, notes)


#: what later commands leave in a build directory, and the command that writes each
LATER_RECORDS = {"profile.json": "profile", "profile.html": "profile", "verify.json": "verify",
                 "validate.json": "validate", "report.html": "report"}


def _carry_over(old: Path, new: Path, manifest: Manifest, elf: Path) -> list[str]:
    """Rebuilding into the same directory replaces it whole. The records of later commands
    (profile, verify, validate, the report page) stay when the new firmware is the same program
    as the old one (same image in memory); otherwise they described other firmware and go, and
    the summary says which and what to run again."""
    present = [name for name in LATER_RECORDS if (old / name).is_file()]
    if not present:
        return []
    old_elf = old / "firmware.elf"
    if old_elf.is_file() and tc.loaded_image(old_elf) == tc.loaded_image(elf):
        for name in present:
            shutil.copy2(old / name, new / name)
        if "profile.json" in present:
            manifest.profile = profile_summary(json.loads((new / "profile.json").read_text()))
        return [f"kept {', '.join(present)} of the previous build in {old}: the firmware is the same"]
    again = sorted({LATER_RECORDS[name] for name in present})
    return [f"removed {', '.join(present)} of the previous build in {old}: they described other firmware; "
            f"run {', '.join(f'`edgekit {cmd}`' for cmd in again)} again"]
