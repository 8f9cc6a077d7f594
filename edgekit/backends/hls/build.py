"""``edgekit build --target fpga``: QONNX -> integer IR -> hls4ml project with IR-derived precisions.

The build directory holds, next to the usual ``manifest.json``, ``model.onnx`` and the IR:

* ``hls/`` - the complete hls4ml project (``firmware/edgekit_model.cpp``, ``parameters.h``,
  ``defines.h`` with every ``ap_fixed`` type, the weights, the test bench with edgekit's
  simulator outputs in ``tb_data/``, ``build_prj.tcl``/``project.tcl`` for Vitis or Vivado
  HLS and ``build_lib.sh`` for the g++ C-simulation library);
* ``hls_model.onnx`` - the graph as hls4ml's QONNX front end received it (channels last);
* ``estimates.json`` - per-layer MACs, BOPs, multipliers, DSP/LUT/FF/BRAM, latency, the fit
  against the part and the BOP comparison with hls4ml's default configurations.

Nothing is compiled here (synthesis needs Vitis/Vivado); ``edgekit verify`` compiles the
C-simulation library with g++ and compares it with the simulator.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from ...version import __version__
from ...builddir import BuildResult, prepare_out_dir, staged_build_dir
from ...errors import BuildDirError, TargetError, ToolchainError, UnsupportedOpError
from ...frontends.qonnx import import_qonnx, load_qonnx
from ...ir.passes import run_default_passes
from ...manifest import Manifest
from ...sim import quantize_input, simulate
from ...stages import generate_inputs
from .boards import get_fpga_board
from .convert import HLS_BACKENDS, IO_TYPES, PROJECT_NAME, HlsOptions, apply_plan, check_patterns, convert, \
    plan_precisions, prepare_for_hls4ml, quiet
from . import integer_path
from .estimate import estimate, format_estimates

HLS_DIR = "hls"
ESTIMATES_FILE = "estimates.json"
TB_VECTORS = 16


def check_hls4ml() -> None:
    try:
        import hls4ml  # noqa: F401
    except ImportError:
        raise ToolchainError("hls4ml is not installed; install the FPGA extra: pip install 'edgekit[hls]' "
                             "(hls4ml[onnx]==1.3.0)") from None


def make_options(board, backend: str | None, io_type: str | None, reuse_factor: int | None) -> HlsOptions:
    backend = (backend or "vitis").lower()
    if backend not in HLS_BACKENDS:
        raise TargetError(f"unknown HLS backend '{backend}'; available: {', '.join(HLS_BACKENDS)}")
    io_type = io_type or "io_parallel"
    if io_type not in IO_TYPES:
        raise TargetError(f"unknown io type '{io_type}'; available: {', '.join(IO_TYPES)}")
    rf = 1 if reuse_factor is None else reuse_factor
    if not isinstance(rf, int) or rf < 1:
        raise TargetError(f"reuse factor must be a positive integer, got {reuse_factor!r}")
    return HlsOptions(backend, io_type, rf, board.part, board.clock_period_ns)


def hls_layout(cleaned, hls_onnx) -> dict:
    """How the hls4ml model's input/output layout relates to the model's own (channels-last)."""
    def shape(m, v):
        return [int(d) for d in m.get_tensor_shape(v.name)[1:]]

    def moved_to_channels_last(v_cleaned, v_hls) -> bool:
        """qonnx marks the layouts it sets: the hls graph's tensor channels last, the model's not."""
        def last(m, v):
            layout = m.get_tensor_layout(v.name)
            return layout is not None and len(layout) >= 3 and layout[-1] == "C"
        return last(hls_onnx, v_hls) and not last(cleaned, v_cleaned)

    in_onnx, in_hls = shape(cleaned, cleaned.graph.input[0]), shape(hls_onnx, hls_onnx.graph.input[0])
    out_onnx, out_hls = shape(cleaned, cleaned.graph.output[0]), shape(hls_onnx, hls_onnx.graph.output[0])
    in_moved = moved_to_channels_last(cleaned.graph.input[0], hls_onnx.graph.input[0])
    out_moved = moved_to_channels_last(cleaned.graph.output[0], hls_onnx.graph.output[0])

    def perm(a, b, strict=True, moved=False):
        if len(a) < 2:
            return None
        p = [0] + list(range(2, len(a) + 1)) + [1]  # (N, C, ...) -> (N, ..., C)
        channels_last = [([1] + a)[i] for i in p][1:]
        # equal shapes say nothing when every axis has the same size (a 3x3x3 map): the layout
        # qonnx recorded decides (found by `edgekit fuzz --fpga`, seed 700265)
        if a == b and not (moved and channels_last == b):
            return None
        if channels_last == b:
            return p
        if strict:
            raise TargetError(f"hls4ml's graph has input layout {b} where the model has {a}; cannot map inputs")
        return None

    # qonnx's channels-last conversion restores the model's own output layout with a final
    # transpose, so a feature-map output comes back channels first (output_perm None).
    return {"input_shape": in_onnx, "hls_input_shape": in_hls, "input_perm": perm(in_onnx, in_hls, moved=in_moved),
            "output_shape": out_onnx, "hls_output_shape": out_hls,
            "output_perm": perm(out_onnx, out_hls, strict=False, moved=out_moved)}


def to_hls_layout(x: np.ndarray, onnx_shape: list, perm: list | None) -> np.ndarray:
    x = np.asarray(x).reshape((x.shape[0], *onnx_shape))
    return np.ascontiguousarray(np.transpose(x, perm) if perm else x)




def _map_is_channels_first(layout: dict) -> bool:
    """True when hls4ml's output is a feature map in the model's (channels-first) layout."""
    return len(layout["hls_output_shape"]) >= 2 and layout["output_perm"] is None


def to_ir_order(y: np.ndarray, layout: dict) -> np.ndarray:
    """hls4ml outputs (N, ...) -> (N, elements) in the IR's channels-last order."""
    y = np.asarray(y).reshape((y.shape[0], *layout["hls_output_shape"]))
    if _map_is_channels_first(layout):
        y = np.moveaxis(y, 1, -1)
    return y.reshape(y.shape[0], -1)


def from_ir_order(q: np.ndarray, layout: dict) -> np.ndarray:
    """(N, elements) in the IR's channels-last order -> hls4ml's output order, flattened."""
    q = np.asarray(q)
    if _map_is_channels_first(layout):
        q = q.reshape((q.shape[0], *layout["hls_output_shape"][1:], layout["hls_output_shape"][0]))
        q = np.moveaxis(q, -1, 1)
    return q.reshape(q.shape[0], -1)


def _testbench(graph, layout: dict, tmp: Path) -> tuple[str, str]:
    """Test-bench vectors for the HLS project: generated inputs and edgekit's simulator outputs."""
    x = generate_inputs(graph, TB_VECTORS, seed=0)
    codes = quantize_input(graph, x)
    out_t = graph.tensors[graph.outputs[0]]
    q = simulate(graph, codes)[graph.outputs[0]]
    q = q.reshape(TB_VECTORS, -1)
    y = (q.astype(np.float64) - out_t.zero_point) * np.resize(np.asarray(out_t.scale, np.float64), q.shape[1])
    y = from_ir_order(y, layout)
    xi = to_hls_layout(x.reshape((TB_VECTORS, *layout["input_shape"])), layout["input_shape"], layout["input_perm"])
    np.save(tmp / "tb_input.npy", xi.reshape(TB_VECTORS, -1).astype(np.float64))
    np.save(tmp / "tb_output.npy", y.reshape(TB_VECTORS, -1))
    return str(tmp / "tb_input.npy"), str(tmp / "tb_output.npy")


def _relativize_config(hls_dir: Path, tmp: Path) -> None:
    """hls4ml records absolute paths of the temporary build; make them relative to the project."""
    cfg = hls_dir / "hls4ml_config.yml"
    text = cfg.read_text()
    text = re.sub(r"^OutputDir: .*$", "OutputDir: .", text, flags=re.M)
    text = re.sub(r"^OnnxModel: .*$", "OnnxModel: ../hls_model.onnx", text, flags=re.M)
    text = re.sub(r"^InputData: .*$", "InputData: tb_data/tb_input_features.dat", text, flags=re.M)
    text = re.sub(r"^OutputPredictions: .*$", "OutputPredictions: tb_data/tb_output_predictions.dat", text, flags=re.M)
    cfg.write_text(text)


def build_fpga(model: str | Path, board: str | None, out_dir: str | Path, backend: str | None = None,
               io_type: str | None = None, reuse_factor: int | None = None, fixed_input=None) -> BuildResult:
    """Build an hls4ml project for an FPGA board into ``out_dir`` (see the module docstring)."""
    t0 = time.monotonic()
    model, out_dir = Path(model), Path(out_dir)
    if model.suffix.lower() == ".tflite":
        raise UnsupportedOpError(f"{model}: the FPGA backend builds QONNX models (hls4ml's QONNX front end); "
                                 ".tflite models are supported for Cortex-M targets")
    brd = get_fpga_board(board)
    opts = make_options(brd, backend, io_type, reuse_factor)
    prepare_out_dir(out_dir)
    check_hls4ml()

    try:  # name the node hls4ml's QONNX path cannot take before edgekit's own lowering
        check_patterns(load_qonnx(model))
        qonnx_refusal = None
    except UnsupportedOpError as e:
        qonnx_refusal = e
    try:
        graph, cleaned = import_qonnx(model, fixed_input)
    except UnsupportedOpError:
        if qonnx_refusal is not None:
            raise qonnx_refusal from None
        raise
    run_default_passes(graph)
    # graphs hls4ml's QONNX path cannot compute exactly (thresholds, float pre-/post-ops) or cannot
    # take (forks) are built from edgekit's integer IR instead (integer_path.py)
    from_ir = integer_path.wanted(graph) or (qonnx_refusal is not None and integer_path.takes(graph))
    if from_ir:
        integer_path.check_supported(graph, opts.io_type)
        hls_onnx = cleaned
        layout = integer_path.layout(graph)
    else:
        if qonnx_refusal is not None:
            raise integer_path.not_taken(graph, qonnx_refusal)
        plan = plan_precisions(graph)
        hls_onnx = prepare_for_hls4ml(cleaned)
        layout = hls_layout(cleaned, hls_onnx)

    with staged_build_dir(out_dir) as tmp:
        cleaned.save(str(tmp / "model.onnx"))
        graph.save(tmp)
        t1 = time.monotonic()
        if from_ir:
            tb_in, tb_out = integer_path.testbench(graph, TB_VECTORS, tmp)
            with quiet():
                hm, plan_json = integer_path.to_model(graph, opts, tmp / HLS_DIR, input_data_tb=tb_in,
                                                      output_data_tb=tb_out)
            types = integer_path.type_table(hm)
            plan = None
        else:
            hls_onnx.save(str(tmp / "hls_model.onnx"))
            tb_in, tb_out = _testbench(graph, layout, tmp)
            hm = convert(str(tmp / "hls_model.onnx"), plan, opts, tmp / HLS_DIR, input_data_tb=tb_in,
                         output_data_tb=tb_out, onnx_model=hls_onnx)
            types = apply_plan(hm, plan)
            plan_json = plan.to_json()
        with quiet():
            hm.write()
        convert_seconds = time.monotonic() - t1
        (tmp / "tb_input.npy").unlink()
        (tmp / "tb_output.npy").unlink()
        _relativize_config(tmp / HLS_DIR, tmp)
        est = estimate(hm, hls_onnx, plan, brd, opts, baselines=not from_ir)
        (tmp / ESTIMATES_FILE).write_text(json.dumps(est, indent=1))
        out_t = graph.tensors[graph.outputs[0]]
        manifest = Manifest(
            edgekit_version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            source=str(model.resolve()),
            source_sha256=graph.meta["source_sha256"],
            backend="hls",
            target="fpga",
            board=brd.name,
            part=brd.part,
            hls={"backend": opts.hls4ml_backend, "io_type": opts.io_type, "reuse_factor": opts.reuse_factor,
                 "strategy": opts.strategy, "clock_period_ns": opts.clock_period_ns, "project_dir": HLS_DIR,
                 "project_name": PROJECT_NAME, "hls4ml_version": _hls4ml_version(),
                 "convert_seconds": round(convert_seconds, 2)},
            layout=layout,
            input={"tensor": graph.inputs[0], "float_shape": list(graph.input_quant.float_shape),
                   "dtype": graph.tensors[graph.inputs[0]].dtype},
            output={"tensor": graph.outputs[0], "shape": list(out_t.shape), "dtype": out_t.dtype},
            precision=plan_json,
            hls_types=types,
            macs=est["totals"]["macs"],
            bops=est["totals"]["bops"],
            estimates=ESTIMATES_FILE,
            fits=est["fits"],
            build_seconds=round(time.monotonic() - t0, 2),
        )
        manifest.save(tmp)
    return BuildResult(out_dir, manifest)


def _hls4ml_version() -> str:
    import hls4ml

    return getattr(hls4ml, "__version__", "?")


def load_estimates(build_dir: Path, manifest: Manifest) -> dict:
    """The build's estimates.json (per-layer MACs, BOPs, resources, latency, fit)."""
    path = Path(build_dir) / manifest.estimates
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BuildDirError(f"{path}: unreadable FPGA estimates ({e}); rebuild with `edgekit build --target fpga`") \
            from None


def project_line(build_dir: Path, manifest: Manifest) -> str:
    h = manifest.hls
    return (f"fpga on {manifest.board} ({manifest.part}): hls4ml {h['hls4ml_version']} {h['backend']} project in "
            f"{build_dir}/{h['project_dir']}, {h['io_type']}, reuse factor {h['reuse_factor']} ({h['strategy']}), "
            f"clock {h['clock_period_ns']} ns, {manifest.macs} MACs, {manifest.bops} BOPs")


def precision_lines(manifest: Manifest) -> list[str]:
    """Where the fixed-point types come from, and each layer's input, weight, accumulator and result type."""
    p = manifest.precision
    if not p["exact"]:
        return [f"float scales ({p['reason']}): hls4ml's own precision inference; "
                "`edgekit verify` reports the difference"]
    lines = [f"precisions from edgekit's integer analysis (bit-exact by construction): input {p['input']}, "
             f"output {p['output']}"]
    for lp in p["layers"]:
        lines.append(f"  {lp['hls_layer']:<18} x {lp['input']:<26} w {lp['weight']:<28} acc {lp['accum']:<12} "
                     f"-> {lp['result']}")
    return lines


def summary(res: BuildResult) -> str:
    """What ``edgekit build --target fpga`` prints: one line, the precisions, the estimates."""
    m = res.manifest
    lines = [f"built {res.out_dir} for {project_line(res.out_dir, m)} in {m.build_seconds} s"]
    lines += precision_lines(m)
    lines.append(format_estimates(load_estimates(res.out_dir, m)))
    lines.append(f"estimates written to {res.out_dir}/{m.estimates}")
    return "\n".join(lines)
