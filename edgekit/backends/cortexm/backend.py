"""The Cortex-M backend: C firmware for a core and board, verified on the host and on QEMU."""
from __future__ import annotations

from pathlib import Path

from ...builddir import BuildResult
from ...errors import TargetError
from ...manifest import Manifest
from ...stages import StageResult, VerifyReport
from ..base import Backend, BuildOptions, ReportSection, VerifyContext
from ...ir.planner import DEFAULT_IO
from .kernels.base import DEFAULT_OPTIMIZE, format_fallbacks
from . import toolchain as tc
from .memory import describe_peak_ram, peak_ram
from .verify import CortexmVerifyReport, host_stage, qemu_stage, time_limit


class CortexmBackend(Backend):
    name = "cortexm"
    title = "Cortex-M"
    build_kind = "a Cortex-M build"
    verify_stages = ("host", "qemu")
    commands = frozenset({"report", "export", "profile", "flash"})

    def handles_target(self, target: str) -> bool:
        return True  # any core; edgekit.targets names the known ones when it is not one

    def build(self, model: Path, target: str, board: str | None, out_dir: Path,
              options: BuildOptions) -> BuildResult:
        from .build import build_cortexm

        if options.hls_backend is not None or options.io_type is not None or options.reuse_factor is not None:
            raise TargetError("--backend, --io-type and --reuse-factor apply to --target fpga only")
        if options.kernels == "reference" and options.optimize is not None:  # it would be silently ignored
            raise TargetError(f"--optimize {options.optimize} chooses among the optimized kernels; with --kernels "
                              "reference it has no effect: drop one of the two options")
        return build_cortexm(model, target, board, out_dir, options.kernels or "optimized",
                             options.optimize or DEFAULT_OPTIMIZE, options.io_buffers or DEFAULT_IO,
                             fixed_input=options.fixed_input)

    def build_summary(self, result: BuildResult) -> str:
        m = result.manifest
        n_opt = sum(1 for r in m.layers if r.get("kernel", "").startswith("optimized"))
        fallbacks = format_fallbacks(m.kernel_fallbacks)
        return (f"built {result.out_dir} for {m.target} on {m.board}: {len(m.layers)} layers, {m.macs} MACs, "
                f"flash {m.memory['flash_bytes']} B, RAM {m.memory['ram_bytes']} B (arena {m.arena_bytes} B, "
                f"stack {m.memory['stack_bytes']} B) in {m.build_seconds} s; {n_opt} layer(s) with optimized kernels"
                + (f" (--optimize {m.optimize})" if m.optimize else "")
                + (f"; {describe_peak_ram(m.memory)}" if "peak_ram_bytes" in m.memory else "")
                + (f"; {fallbacks}" if fallbacks else "")
                + "".join(f"\n{note}" for note in result.notes))

    def check_verify(self, manifest: Manifest, stages: tuple[str, ...], floats_given: bool,
                     codes_given: bool) -> None:
        if "qemu" in stages:
            tc.qemu()  # a missing emulator is an error before any work, not a skipped stage

    def run_stage(self, stage: str, ctx: VerifyContext) -> StageResult:
        limit = ctx.timeout or time_limit(ctx.manifest, ctx.vectors)
        out_dtype = ctx.graph.tensors[ctx.graph.outputs[0]].dtype
        if stage == "host":
            return host_stage(ctx.build_dir, ctx.manifest, ctx.codes, ctx.reference, out_dtype, limit)
        return qemu_stage(ctx.build_dir, ctx.manifest, ctx.codes, ctx.reference, out_dtype, limit, ctx.measured)

    def verify_report(self, ctx: VerifyContext, results: list[StageResult]) -> VerifyReport:
        m = ctx.manifest
        measured = dict(ctx.measured)
        emulated_board = measured.pop("emulated_board", None)  # None: the firmware did not run
        memory = dict(m.memory, arena_bytes=m.arena_bytes, **measured)
        memory.update(peak_ram(m, measured))
        out_shape = list(ctx.graph.tensors[ctx.graph.outputs[0]].shape)
        return CortexmVerifyReport(str(ctx.build_dir), m.board, ctx.vectors, ctx.input_source, out_shape, results,
                                   memory, extra={"power_of_two": ctx.power_of_two, "frontend": m.frontend or "qonnx",
                                                  "emulated_board": emulated_board})

    def report_sections(self, build_dir: Path, manifest: Manifest) -> list[ReportSection]:
        from .report import report_json, report_text

        return [ReportSection("layers", report_text(manifest).splitlines(), report_json(manifest))]

    def report_page(self, build_dir: Path, manifest: Manifest) -> str:
        from .report import report_page

        return report_page(manifest, build_dir)

    def export(self, build_dir: Path, manifest: Manifest, dest: Path) -> tuple[Path, str]:
        from .export import export

        dest = export(build_dir, dest)
        return dest, (f"exported {build_dir} to {dest}: Makefile, CMakeLists.txt, src/ (the library), firmware/ "
                      "(the test harness); build it with `make` (arm-none-eabi-gcc, no Python)")

    def profile(self, build_dir: Path, manifest: Manifest, **options):
        from .profile import profile

        return profile(build_dir, **options)

    def flash(self, build_dir: Path, manifest: Manifest, **options):
        from .flash import flash

        return flash(build_dir, **options)
