"""``edgekit verify`` for FPGA builds: simulator (reference), qonnx, hls4ml C-simulation.

The C-simulation is hls4ml's own: the project's ``build_lib.sh`` compiles the generated
HLS C++ (the same source Vitis/Vivado HLS synthesises, with the ``ap_fixed`` headers)
with g++ into a shared library, which ``hls4ml.converters.link_existing_project(...)``
loads and runs on the inputs. Outputs are compared as integer codes with the same
``_compare`` and table as the Cortex-M verification.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...build import load_manifest
from ...errors import BuildDirError, ToolchainError, VerificationError
from ...ir.contract import dequantized_to_codes, is_power_of_two
from ...ir.graph import Graph
from ...sim import quantize_input, simulate
from ...verify import StageResult, VerifyReport, _compare, load_float_inputs, qonnx_stage
from .build import to_hls_layout, to_ir_order


class HlsVerifyReport(VerifyReport):
    """The Cortex-M report's table, with the FPGA build's precisions and estimates as footer."""

    def footer_lines(self) -> list[str]:
        m = self.memory
        return [f"fpga {self.board} ({m['part']}), {m['hls_backend']} {m['io_type']} reuse factor "
                f"{m['reuse_factor']}: C-simulation compiled with g++ in {m['csim_compile_seconds']} s; "
                f"estimate {m['dsp']} DSP, {m['lut']} LUT, {m['ff']} FF, {m['bram18']} BRAM18, "
                f"{m['latency_cycles'] if m['latency_cycles'] is not None else '?'} cycles "
                f"({'fits' if m['fits'] else 'does not fit'})"]


def run_csim(build_dir: Path, manifest: dict, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Compile the project's C-simulation library with g++ and run ``x`` (model layout) through it.

    Returns the outputs (real values, flattened channels last: the IR's order) and the compile time.
    """
    if shutil.which("g++") is None:
        raise ToolchainError("g++ is not installed; hls4ml's C-simulation needs it (apt-get install g++)")
    if importlib.util.find_spec("hls4ml") is None:
        raise ToolchainError("hls4ml is not installed; install the FPGA extra: pip install 'edgekit[hls]'")
    project = build_dir / manifest["hls"]["project_dir"]
    if not (project / "hls4ml_config.yml").is_file():
        raise BuildDirError(f"{project}: the hls4ml project is missing; rebuild with `edgekit build --target fpga`")
    lay = manifest["layout"]
    xin = to_hls_layout(x.reshape((x.shape[0], *lay["input_shape"])), lay["input_shape"], lay["input_perm"])
    xin = np.ascontiguousarray(xin.reshape(x.shape[0], -1).astype(np.float64))
    with tempfile.TemporaryDirectory(prefix="edgekit-csim-") as d:
        np.save(Path(d) / "in.npy", xin)
        proc = subprocess.run([sys.executable, "-m", "edgekit.backends.hls._csim", str(project),
                               str(Path(d) / "in.npy"), str(Path(d) / "out.npy")], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
            what = ("g++ could not compile" if "EDGEKIT_CSIM_COMPILE_FAILED" in proc.stderr
                    else f"exit status {proc.returncode} from")
            raise VerificationError(f"{what} the hls4ml C-simulation in {project}:\n{tail}")
        y = np.load(Path(d) / "out.npy")
    compile_s = float(next(line.split("=")[1] for line in proc.stdout.splitlines()
                           if line.startswith("EDGEKIT_CSIM_COMPILE_SECONDS=")))
    return to_ir_order(np.asarray(y, np.float64).reshape(x.shape[0], -1), lay), compile_s


def verify_hls(build_dir: str | Path, inputs=None, count: int = 256, seed: int = 0,
               stages: tuple[str, ...] = ("qonnx", "csim"), codes=None) -> HlsVerifyReport:
    build_dir = Path(build_dir).resolve()
    manifest = load_manifest(build_dir)
    if codes is not None:
        raise VerificationError("--codes is for TFLite builds; give an FPGA build float --inputs in the model's "
                                "input layout (the C-simulation quantizes them with the input quantizer's type)")
    graph = Graph.load(build_dir)
    x, source = load_float_inputs(graph, inputs, count, seed)

    codes = quantize_input(graph, x)
    out_t = graph.tensors[graph.outputs[0]]
    ref = simulate(graph, codes)[graph.outputs[0]].reshape(x.shape[0], -1)
    results = [StageResult("simulator", True, int(ref.size), 0, 0, "reference")]
    scale = np.resize(np.asarray(out_t.scale, np.float64), ref.shape[1])  # per channel: last IR axis
    requant_exact = all(n.attrs["requant"].exact for n in graph.nodes if n.attrs.get("requant") is not None)
    pow2 = requant_exact and is_power_of_two(graph.input_quant.scale)

    if "qonnx" in stages:  # as edgekit.verify.verify's qonnx stage
        results.append(qonnx_stage(build_dir / "model.onnx", graph, x, ref, pow2))

    est = json.loads((build_dir / manifest["estimates"]).read_text())
    compile_s = None
    exact = bool(manifest["precision"]["exact"])
    y, compile_s = run_csim(build_dir, manifest, x)
    q = dequantized_to_codes(y.reshape(x.shape[0], -1), scale, out_t.zero_point)
    note = "" if exact else ("float scales: hls4ml multiplies by fixed-point 1/scale and scale (ApplyAlpha "
                             "layers) where edgekit divides in float32 and requantizes with Q31 multipliers")
    results.append(_compare(f"hls4ml C-sim ({manifest['hls']['backend']})", q, ref, exact, note))

    t, lat = est["totals"], est["latency"]
    memory = {"part": manifest["part"], "hls_backend": manifest["hls"]["backend"],
              "io_type": manifest["hls"]["io_type"], "reuse_factor": manifest["hls"]["reuse_factor"],
              "csim_compile_seconds": round(compile_s, 1), "dsp": t["dsp"], "lut": t["lut"], "ff": t["ff"],
              "bram18": t["bram18"], "latency_cycles": lat.get("cycles"), "fits": est["fits"]}
    return HlsVerifyReport(str(build_dir), manifest["board"], int(x.shape[0]), source, list(out_t.shape), results,
                           memory, extra={"power_of_two": pow2, "backend": "hls", "precision_exact": exact})
