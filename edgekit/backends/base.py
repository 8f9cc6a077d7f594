"""The interface every backend implements (Cortex-M firmware, FPGA hls4ml project).

A backend builds a build directory from a model, contributes its own verify stages (next
to the simulator and the reference stage that edgekit.verify runs for every build) and
its sections of ``edgekit report``, and says which of the other commands (export,
profile, flash) apply to its builds; the commands that do not apply are refused with
one line naming the backend. edgekit.build, edgekit.verify and the CLI dispatch through
it; no backend imports them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..builddir import BuildResult
from ..errors import UnsupportedCommandError
from ..ir.graph import Graph
from ..manifest import Manifest
from ..stages import StageResult, VerifyReport

#: commands that work on a finished build directory, besides verify
COMMANDS = ("report", "export", "profile", "flash")


@dataclass(frozen=True)
class BuildOptions:
    """Backend-specific build options; a backend refuses the ones that are not its own."""
    kernels: str | None = None  # Cortex-M: "optimized" (default) or "reference"
    optimize: str | None = None  # Cortex-M: "size", "balanced" (default) or "speed" (int8 or int16 weights)
    io_buffers: str | None = None  # Cortex-M: model input/output "arena" (default: inside the arena) or "caller"
    hls_backend: str | None = None  # FPGA: vitis or vivado
    io_type: str | None = None  # FPGA: io_parallel or io_stream
    reuse_factor: int | None = None  # FPGA
    # --input-bits/--calibration: the input quantizer of a QONNX model whose first layer reads the
    # float input (a frontends.qonnx_input.FixedInput); every backend passes it to import_qonnx
    fixed_input: Any = None


@dataclass
class VerifyContext:
    """What every stage of one verification sees: the inputs and the simulator's outputs."""
    build_dir: Path
    manifest: Manifest
    graph: Graph
    floats: np.ndarray | None  # float inputs (None when raw input codes were given)
    codes: np.ndarray  # input codes, (N, *input shape)
    reference: np.ndarray  # the simulator's output codes, (N, output size)
    input_source: str
    power_of_two: bool
    timeout: float | None  # seconds a stage may run; None: the backend's limit for this work
    measured: dict = field(default_factory=dict)  # what the stages measured (e.g. stack, arena touched)

    @property
    def vectors(self) -> int:
        return int(self.codes.shape[0])


@dataclass
class ReportSection:
    """Part of ``edgekit report``: text lines and the JSON keys it contributes."""
    title: str
    lines: list[str]
    data: dict


@dataclass
class BuildReport:
    sections: list[ReportSection]
    page: Path | None = None  # report.html, written by ``edgekit report``

    def text(self) -> str:
        return "\n".join(line for s in self.sections for line in s.lines)

    def to_json(self) -> dict:
        out: dict = {}
        for s in self.sections:
            out.update(s.data)
        return out


class Backend(ABC):
    name: ClassVar[str]  # the manifest's "backend"
    title: ClassVar[str]  # how messages name it, e.g. "Cortex-M", "FPGA (hls4ml)"
    build_kind: ClassVar[str]  # "a Cortex-M build", "an FPGA (hls4ml) build"
    verify_stages: ClassVar[tuple[str, ...]]  # its own stages, after the simulator and the reference
    commands: ClassVar[frozenset[str]]  # the COMMANDS its builds support

    @abstractmethod
    def handles_target(self, target: str) -> bool:
        """Whether ``edgekit build --target TARGET`` is this backend's."""

    @abstractmethod
    def build(self, model: Path, target: str, board: str | None, out_dir: Path,
              options: BuildOptions) -> BuildResult:
        ...

    @abstractmethod
    def build_summary(self, result: BuildResult) -> str:
        """What ``edgekit build`` prints."""

    # --- verify ---
    def check_verify(self, manifest: Manifest, stages: tuple[str, ...], floats_given: bool,
                     codes_given: bool) -> None:
        """Refuse a verification this backend cannot run, before any work (missing tools, inputs)."""

    @abstractmethod
    def run_stage(self, stage: str, ctx: VerifyContext) -> StageResult:
        """Run one of ``verify_stages`` and compare it with ``ctx.reference``."""

    @abstractmethod
    def verify_report(self, ctx: VerifyContext, results: list[StageResult]) -> VerifyReport:
        ...

    # --- the other commands ---
    @abstractmethod
    def report_sections(self, build_dir: Path, manifest: Manifest) -> list[ReportSection]:
        ...

    def report_page(self, build_dir: Path, manifest: Manifest) -> str | None:
        """``report.html`` of a build (templates/report/), or None when the backend has no page."""
        return None

    def export(self, build_dir: Path, manifest: Manifest, dest: Path) -> tuple[Path, str]:
        """Write a standalone project; returns it and one line saying what it holds."""
        raise self.refuse("export", build_dir)

    def profile(self, build_dir: Path, manifest: Manifest, **options: Any):
        raise self.refuse("profile", build_dir)

    def flash(self, build_dir: Path, manifest: Manifest, **options: Any):
        raise self.refuse("flash", build_dir)

    def refusal_reason(self, command: str, build_dir: Path) -> tuple[str, str]:
        """What ``command`` does that this backend's builds do not have, and what to use instead."""
        return f"`edgekit {command}` does not apply here", ""

    def refuse(self, command: str, build_dir: Path) -> UnsupportedCommandError:
        """The one-line error for a command this backend's builds do not support."""
        does, instead = self.refusal_reason(command, build_dir)
        return UnsupportedCommandError(f"{does}; {build_dir} is {self.build_kind}" + (f": {instead}" if instead else ""))
