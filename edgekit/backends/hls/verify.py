"""``edgekit verify`` for FPGA builds: simulator (reference), qonnx, hls4ml C-simulation.

The C-simulation is hls4ml's own: the project's ``build_lib.sh`` compiles the generated
HLS C++ (the same source Vitis/Vivado HLS synthesises, with the ``ap_fixed`` headers)
with g++ into a shared library, which ``hls4ml.converters.link_existing_project(...)``
loads and runs on the inputs. Outputs are compared as integer codes with the same
``stages.compare`` and table as every other backend's verification.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...errors import BuildDirError, ToolchainError, VerificationError
from ...ir.contract import dequantized_to_codes
from ...manifest import Manifest
from ...progress import step
from ...stages import StageResult, VerifyReport, compare
from .build import to_hls_layout, to_ir_order


class HlsVerifyReport(VerifyReport):
    """The verification table, with the FPGA build's estimates as footer."""

    def footer_lines(self) -> list[str]:
        m = self.memory
        csim = ("C-simulation not run" if m["csim_compile_seconds"] is None
                else f"C-simulation compiled with g++ in {m['csim_compile_seconds']} s")
        return [f"fpga {self.board} ({m['part']}), {m['hls_backend']} {m['io_type']} reuse factor "
                f"{m['reuse_factor']}: {csim}; "
                f"estimate {m['dsp']} DSP, {m['lut']} LUT, {m['ff']} FF, {m['bram18']} BRAM18, "
                f"{m['latency_cycles'] if m['latency_cycles'] is not None else '?'} cycles "
                f"({'fits' if m['fits'] else 'does not fit'})"]


def run_csim(build_dir: Path, manifest: Manifest, x: np.ndarray,
             timeout: float | None = None) -> tuple[np.ndarray, float]:
    """Compile the project's C-simulation library with g++ and run ``x`` (model layout) through it.

    Returns the outputs (real values, flattened channels last: the IR's order) and the compile time.
    """
    if shutil.which("g++") is None:
        raise ToolchainError("g++ is not installed; hls4ml's C-simulation needs it (apt-get install g++)")
    if importlib.util.find_spec("hls4ml") is None:
        raise ToolchainError("hls4ml is not installed; install the FPGA extra: pip install 'edgekit[hls]'")
    project = build_dir / manifest.hls["project_dir"]
    if not (project / "hls4ml_config.yml").is_file():
        raise BuildDirError(f"{project}: the hls4ml project is missing; rebuild with `edgekit build --target fpga`")
    lay = manifest.layout
    xin = to_hls_layout(x.reshape((x.shape[0], *lay["input_shape"])), lay["input_shape"], lay["input_perm"])
    xin = np.ascontiguousarray(xin.reshape(x.shape[0], -1).astype(np.float64))
    with tempfile.TemporaryDirectory(prefix="edgekit-csim-") as d:
        np.save(Path(d) / "in.npy", xin)
        cmd = [sys.executable, "-m", "edgekit.backends.hls._csim", str(project), str(Path(d) / "in.npy"),
               str(Path(d) / "out.npy")]
        try:
            with step(f"hls4ml C-simulation of {project}: g++ compile, {x.shape[0]} vectors"):
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VerificationError(f"the hls4ml C-simulation in {project} did not finish within {timeout:g} s "
                                    "(`edgekit verify --timeout SECONDS` sets the limit)") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
            what = ("g++ could not compile" if "EDGEKIT_CSIM_COMPILE_FAILED" in proc.stderr
                    else f"exit status {proc.returncode} from")
            raise VerificationError(f"{what} the hls4ml C-simulation in {project}:\n{tail}")
        y = np.load(Path(d) / "out.npy")
    compile_s = float(next(line.split("=")[1] for line in proc.stdout.splitlines()
                           if line.startswith("EDGEKIT_CSIM_COMPILE_SECONDS=")))
    return to_ir_order(np.asarray(y, np.float64).reshape(x.shape[0], -1), lay), compile_s


def csim_stage(build_dir: Path, manifest: Manifest, graph, x: np.ndarray, ref: np.ndarray,
               timeout: float | None, measured: dict, codes: np.ndarray | None = None) -> StageResult:
    """hls4ml's C-simulation on the float inputs ``x``, as output codes compared with the simulator's ``ref``.

    A build made from edgekit's integer IR (``layout["inputs"] == "codes"``) takes the input
    ``codes`` and returns output codes: its input quantizer runs on the host, as on a microcontroller.
    """
    if manifest.layout.get("inputs") == "codes":
        y, compile_s = run_csim(build_dir, manifest, np.asarray(codes, np.float64), timeout)
        measured["csim_compile_seconds"] = round(compile_s, 1)
        q = np.rint(y.reshape(codes.shape[0], -1)).astype(np.int64)
        return compare(f"hls4ml C-sim ({manifest.hls['backend']})", q, ref, True, "")
    out_t = graph.tensors[graph.outputs[0]]
    scale = np.resize(np.asarray(out_t.scale, np.float64), ref.shape[1])  # per channel: last IR axis
    exact = bool(manifest.precision["exact"])
    y, compile_s = run_csim(build_dir, manifest, x, timeout)
    measured["csim_compile_seconds"] = round(compile_s, 1)
    q = dequantized_to_codes(y.reshape(x.shape[0], -1), scale, out_t.zero_point)
    note = "" if exact else ("float scales: hls4ml multiplies by fixed-point 1/scale and scale (ApplyAlpha "
                             "layers) where edgekit divides in float32 and requantizes with Q31 multipliers")
    return compare(f"hls4ml C-sim ({manifest.hls['backend']})", q, ref, exact, note)
