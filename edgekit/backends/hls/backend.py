"""The FPGA backend: an hls4ml project with IR-derived precisions, verified by hls4ml's C-simulation."""
from __future__ import annotations

from pathlib import Path

from ...builddir import BuildResult
from ...errors import TargetError, VerificationError
from ...manifest import Manifest
from ...stages import StageResult, VerifyReport
from ..base import Backend, BuildOptions, ReportSection, VerifyContext

TARGET = "fpga"


class HlsBackend(Backend):
    name = "hls"
    title = "FPGA (hls4ml)"
    build_kind = "an FPGA (hls4ml) build"
    verify_stages = ("csim",)
    commands = frozenset({"report", "export"})

    def handles_target(self, target: str) -> bool:
        return target == TARGET

    def build(self, model: Path, target: str, board: str | None, out_dir: Path,
              options: BuildOptions) -> BuildResult:
        from .build import build_fpga  # hls4ml is the optional extra: imported only to build

        if options.kernels is not None:
            raise TargetError("--kernels applies to Cortex-M targets only")
        if options.optimize is not None:
            raise TargetError("--optimize applies to Cortex-M targets only")
        if model.suffix.lower() == ".tflite":
            raise TargetError(f"{model}: the FPGA backend (hls4ml) takes QONNX models; .tflite files build for "
                              "Cortex-M targets only")
        return build_fpga(model, board, out_dir, backend=options.hls_backend, io_type=options.io_type,
                          reuse_factor=options.reuse_factor, fixed_input=options.fixed_input)

    def build_summary(self, result: BuildResult) -> str:
        from .build import summary

        return summary(result)

    def check_verify(self, manifest: Manifest, stages: tuple[str, ...], floats_given: bool,
                     codes_given: bool) -> None:
        if codes_given:
            raise VerificationError("--codes is for TFLite builds; give an FPGA build float --inputs in the model's "
                                    "input layout (the C-simulation quantizes them with the input quantizer's type)")

    def run_stage(self, stage: str, ctx: VerifyContext) -> StageResult:
        from .verify import csim_stage

        return csim_stage(ctx.build_dir, ctx.manifest, ctx.graph, ctx.floats, ctx.reference, ctx.timeout,
                          ctx.measured, codes=ctx.codes)

    def verify_report(self, ctx: VerifyContext, results: list[StageResult]) -> VerifyReport:
        from .build import load_estimates
        from .verify import HlsVerifyReport

        m = ctx.manifest
        est = load_estimates(ctx.build_dir, m)
        t, lat = est["totals"], est["latency"]
        memory = {"part": m.part, "hls_backend": m.hls["backend"], "io_type": m.hls["io_type"],
                  "reuse_factor": m.hls["reuse_factor"], "csim_compile_seconds": ctx.measured.get("csim_compile_seconds"),
                  "dsp": t["dsp"], "lut": t["lut"], "ff": t["ff"], "bram18": t["bram18"],
                  "latency_cycles": lat.get("cycles"), "fits": est["fits"]}
        out_shape = list(ctx.graph.tensors[ctx.graph.outputs[0]].shape)
        return HlsVerifyReport(str(ctx.build_dir), m.board, ctx.vectors, ctx.input_source, out_shape, results, memory,
                               extra={"power_of_two": ctx.power_of_two, "backend": self.name,
                                      "precision_exact": bool(m.precision["exact"])})

    def report_sections(self, build_dir: Path, manifest: Manifest) -> list[ReportSection]:
        from .build import load_estimates, precision_lines, project_line
        from .estimate import format_estimates

        est = load_estimates(build_dir, manifest)
        m = manifest
        head = ReportSection("build", [f"edgekit build for {project_line(build_dir, m)}"],
                             {"target": m.target, "board": m.board, "part": m.part, "backend": self.name,
                              "hls": m.hls, "macs": m.macs, "bops": m.bops, "fits": m.fits})
        precisions = ReportSection("precisions", precision_lines(m), {"precision": m.precision})
        estimates = ReportSection("estimates", format_estimates(est).splitlines(), {"estimates": est})
        return [head, precisions, estimates]

    def report_page(self, build_dir: Path, manifest: Manifest) -> str:
        from .report import report_page

        return report_page(build_dir, manifest)

    def export(self, build_dir: Path, manifest: Manifest, dest: Path) -> tuple[Path, str]:
        from .export import HLS_TOOLS, export_hls

        dest = export_hls(build_dir, manifest, dest)
        tool = HLS_TOOLS.get(manifest.hls["backend"], "vitis_hls")
        return dest, (f"exported {build_dir} to {dest}: the hls4ml {manifest.hls['backend']} project for "
                      f"{manifest.part} (firmware/, tb_data/, build_prj.tcl); synthesise it with "
                      f"`{tool} -f build_prj.tcl`, or build the C-simulation with `sh build_lib.sh` (g++)")

    def refusal_reason(self, command: str, build_dir: Path) -> tuple[str, str]:
        if command == "profile":
            return ("profile counts Cortex-M instructions on QEMU",
                    f"`edgekit report {build_dir}` gives its estimated latency and resources; synthesis of "
                    "`edgekit export`'s HLS project gives the real ones")
        if command == "flash":
            return ("flash runs firmware on a microcontroller board",
                    f"an FPGA needs a bitstream from Vitis/Vivado synthesis of `edgekit export`'s HLS project; "
                    f"`edgekit verify {build_dir}` runs its C-simulation")
        return super().refusal_reason(command, build_dir)
