"""The Python API; the CLI is a thin layer over these functions.

``build`` and ``verify`` work for every backend. ``report``, ``export``, ``profile`` and
``flash`` run the command of the backend that made the build directory, or raise
UnsupportedCommandError (one line naming the backend) when it does not support it.
"""
from __future__ import annotations

from pathlib import Path

from .backends import backend_named
from .backends.base import Backend, BuildReport
from .build import build, build_summary, resolve_target
from .builddir import BuildResult
from .manifest import Manifest, load_manifest
from .stages import VerifyReport, generate_inputs
from .verify import verify

__all__ = ["BuildReport", "BuildResult", "Manifest", "VerifyReport", "build", "build_summary", "export",
           "flash", "generate_inputs", "load_manifest", "profile", "report", "resolve_target", "verify"]


def _backend_for(build_dir: Path, command: str) -> tuple[Backend, Manifest]:
    manifest = load_manifest(build_dir)
    backend = backend_named(manifest.backend)
    if command not in backend.commands:
        raise backend.refuse(command, build_dir)
    return backend, manifest


def report(build_dir: str | Path) -> BuildReport:
    """The per-layer report of a build (``.text()``, ``.to_json()``): the sections its backend contributes."""
    backend, manifest = _backend_for(Path(build_dir), "report")
    return BuildReport(backend.report_sections(Path(build_dir), manifest))


def export(build_dir: str | Path, dest: str | Path) -> tuple[Path, str]:
    """Write a standalone project from a build; returns its folder and one line saying what it holds."""
    backend, manifest = _backend_for(Path(build_dir), "export")
    return backend.export(Path(build_dir), manifest, Path(dest))


def profile(build_dir: str | Path, **options):
    """Exact instruction counts per layer on an emulated board (Cortex-M builds); see
    edgekit.backends.cortexm.profile.profile for the options."""
    backend, manifest = _backend_for(Path(build_dir), "profile")
    return backend.profile(Path(build_dir), manifest, **options)


def flash(build_dir: str | Path, **options):
    """Run a build's firmware on its board and compare (Cortex-M builds); see
    edgekit.backends.cortexm.flash.flash for the options."""
    backend, manifest = _backend_for(Path(build_dir), "flash")
    return backend.flash(Path(build_dir), manifest, **options)
