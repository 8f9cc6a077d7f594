"""``edgekit build``: QONNX file -> integer IR -> C sources -> host runner and firmware.

Everything is written into a temporary sibling directory first and moved into place
only when every step succeeded, so a failed build never leaves a half-written
output directory behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .backends.cortexm import generate_c
from .backends.cortexm import toolchain as tc
from .backends.cortexm.memory import breakdown, fit_report, raise_if_over
from .errors import BuildDirError, TargetError
from .frontends.qonnx import import_qonnx
from .ir.passes import run_default_passes
from .ir.planner import check_plan, plan_memory
from .ops import get_op
from .backends.cortexm.stack import inference_stack_bytes
from .report import write_reports
from .targets import Board, resolve

MANIFEST = "manifest.json"


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict


def _render_linker_script(core, board: Board, path: Path) -> None:
    tc.render_linker_script(core, board, path)


def _layer_report(graph, plan, kernels: dict | None = None) -> list[dict]:
    rows = []
    for node in graph.nodes:
        op = get_op(node.op, node.name)
        out = graph.tensors[node.outputs[0]]
        p = plan.placements.get(node.outputs[0])
        rows.append({
            "name": node.name, "op": node.op,
            "input_shape": list(graph.tensors[node.inputs[0]].shape), "output_shape": list(out.shape),
            "output_dtype": out.dtype, "macs": op.macs(node, graph),
            "weight_bytes": sum(graph.constants[i].nbytes for i in node.inputs if i in graph.constants),
            "output_bytes": out.nbytes, "buffer": p.buffer if p else None,
            "arena_offset": p.offset if p and p.buffer == "arena" else None,
        })
        if kernels and node.name in kernels:
            rows[-1]["kernel"] = kernels[node.name]
    return rows


def _prepare_out_dir(out_dir: Path) -> None:
    """Refuse to clobber a directory that is not an earlier edgekit build."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BuildDirError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise BuildDirError(f"{out_dir}: exists, is not empty and is not an edgekit build; "
                                "choose another -o directory")


KERNELS = ("optimized", "reference")


def build(model: str | Path, target: str, board: str | None, out_dir: str | Path, *, backend: str | None = None,
          io_type: str | None = None, reuse_factor: int | None = None, kernels: str = "optimized") -> BuildResult:
    """Compile a QONNX model (or an int8 ``.tflite`` model) for a Cortex-M core and board into ``out_dir``.

    ``kernels="optimized"`` (default) uses the DSP-extension kernels (templates/cortexm/ops_dsp,
    docs/kernels.md) for the layers that fit them on cores that have it; ``"reference"`` keeps
    the portable reference kernels everywhere. Both compute the same integers.

    ``target="fpga"`` writes an hls4ml project instead (``backend``: vitis/vivado,
    ``io_type``: io_parallel/io_stream, ``reuse_factor``); see edgekit/backends/hls.
    """
    # --- FPGA targets (issue 7): hls4ml project, edgekit/backends/hls ---
    if target == "fpga":
        from .backends.hls import build_fpga

        if Path(model).suffix.lower() == ".tflite":
            raise TargetError(f"{model}: the FPGA backend (hls4ml) takes QONNX models; .tflite files build for "
                              "Cortex-M targets only")

        return build_fpga(model, board, out_dir, backend=backend, io_type=io_type, reuse_factor=reuse_factor)
    if backend is not None or io_type is not None or reuse_factor is not None:

        raise TargetError("--backend, --io-type and --reuse-factor apply to --target fpga only")
    # --- end FPGA ---
    t0 = time.monotonic()
    if kernels not in KERNELS:
        raise TargetError(f"kernels '{kernels}': choose one of {', '.join(KERNELS)}")
    model, out_dir = Path(model), Path(out_dir)
    core, brd = resolve(target, board)
    _prepare_out_dir(out_dir)
    tc.arm_gcc(), tc.arm_size(), tc.host_cc()  # fail before any work if a tool is missing

    if model.suffix.lower() == ".tflite":  # int8 TFLite flatbuffer (issue 6): edgekit/frontends/tflite/
        from .frontends.tflite.importer import import_tflite

        graph, cleaned = import_tflite(model)
    else:
        graph, cleaned = import_qonnx(model)
    run_default_passes(graph)
    plan = plan_memory(graph)
    check_plan(plan)

    created = _make_parents(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if isinstance(cleaned, bytes):  # TFLite: the flatbuffer itself, for verify's TFLite reference stage
            (tmp / "model.tflite").write_bytes(cleaned)
        else:
            cleaned.save(str(tmp / "model.onnx"))
        graph.save(tmp)
        (tmp / "src").mkdir()
        codegen = generate_c(graph, plan, tmp / "src", kernels=kernels, features=core.features, board=brd)
        tc.copy_firmware_sources(tmp / "firmware")
        _render_linker_script(core, brd, tmp / "firmware" / "link.ld")
        elf = tc.compile_firmware(tmp, core, brd, tmp / "firmware" / "link.ld")
        tc.compile_host(tmp)
        sizes = tc.section_sizes(elf)
        usage = tc.memory_usage(sizes)
        fit = _check_fit(elf, brd)
        manifest = {
            "edgekit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(model.resolve()),
            "source_sha256": graph.meta["source_sha256"],
            "frontend": graph.meta.get("frontend", "qonnx"),
            "target": core.name,
            "board": brd.name,
            "qemu_machine": brd.qemu_machine,
            "firmware": "firmware.elf",
            "host_runner": "host/ek_host_runner",
            "input": {"tensor": graph.inputs[0], "float_shape": list(graph.input_quant.float_shape),
                      "dtype": graph.tensors[graph.inputs[0]].dtype},
            "output": {"tensor": graph.outputs[0], "shape": list(graph.tensors[graph.outputs[0]].shape),
                       "dtype": graph.tensors[graph.outputs[0]].dtype},
            "macs": codegen["macs"],
            "weight_bytes": codegen["weight_bytes"],
            "arena_bytes": plan.arena_bytes,
            "sections": sizes,
            "memory": usage,
            "memory_breakdown": breakdown(elf, sizes),
            "fit": fit,
            "board_description": brd.to_json(),
            "kernels": kernels,
            "layers": _layer_report(graph, plan, codegen["kernels"]),
            "memory_plan": plan.to_json(),
            "build_seconds": round(time.monotonic() - t0, 2),
        }
        manifest["memory"]["inference_stack_static_bytes"] = inference_stack_bytes(tmp / "obj" / "model.su")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        write_reports(manifest, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):  # leave the file system as it was
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    return BuildResult(out_dir, manifest)


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (outermost first)."""
    missing = []
    p = path.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _check_fit(elf: Path, board: Board) -> dict:
    """Every memory region of the board with its use; refuses a model that overflows any of them."""
    report = fit_report(elf, board)
    raise_if_over(report, board)
    return report


def load_manifest(build_dir: str | Path) -> dict:
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        raise BuildDirError(f"{build_dir}: not an edgekit build directory (no {MANIFEST}); "
                            "run `edgekit build` first")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise BuildDirError(f"{path}: unreadable manifest ({e}); rebuild") from None
