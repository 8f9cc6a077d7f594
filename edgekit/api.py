"""The Python API; the CLI is a thin layer over these functions.

``build``, ``verify`` and ``validate`` work for every backend. ``report``, ``export``, ``profile`` and
``flash`` run the command of the backend that made the build directory, or raise
UnsupportedCommandError (one line naming the backend) when it does not support it.
"""
from __future__ import annotations

from pathlib import Path

from .backends import backend_named
from .backends.base import Backend, BuildReport
from .build import build, build_summary, resolve_target
from .builddir import BuildResult
from .errors import BuildDirError
from .manifest import Manifest, load_manifest
from .pages import REPORT_PAGE, write_page
from .stages import VerifyReport, generate_inputs
from .validation import ValidationReport, validate
from .verify import verify

__all__ = ["BuildReport", "BuildResult", "Manifest", "ValidationReport", "VerifyReport", "build", "build_summary",
           "export", "flash", "generate_inputs", "load_manifest", "profile", "quantize", "report", "resolve_target",
           "validate", "verify"]


def _backend_for(build_dir: Path, command: str) -> tuple[Backend, Manifest]:
    manifest = load_manifest(build_dir)
    backend = backend_named(manifest.backend)
    if command not in backend.commands:
        raise backend.refuse(command, build_dir)
    return backend, manifest


def report(build_dir: str | Path, page: bool = True) -> BuildReport:
    """The per-layer report of a build (``.text()``, ``.to_json()``): the sections its backend
    contributes; with ``page``, also (re)writes report.html from what the directory holds now
    (profile, verify and validate records), its path in ``.page``."""
    build_dir = Path(build_dir)
    backend, manifest = _backend_for(build_dir, "report")
    rep = BuildReport(backend.report_sections(build_dir, manifest))
    html = backend.report_page(build_dir, manifest) if page else None
    if html is not None:
        try:
            rep.page = write_page(build_dir / REPORT_PAGE, html)
        except OSError as e:
            raise BuildDirError(f"{build_dir / REPORT_PAGE}: cannot write the report page ({e.strerror}); "
                                "make the build directory writable") from None
    return rep


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


def quantize(model, calibration, output: str | Path, *, weight_bits: int = 8, scales: str | None = None,
             per_channel: bool = False, equalize: int = 0, bias_correction: bool = True):
    """Post-training quantization (docs/quantize.md): ``model`` is a float ``torch.nn.Module``, a
    ``keras.Model``, or the path of a float ``.onnx`` or ``.keras`` file; ``calibration`` an array
    (N, ...) in the model's input layout or a ``.npy`` path. Writes ``output`` (QONNX ``.onnx`` for
    PyTorch and ONNX, int8 ``.tflite`` for Keras) and returns an edgekit.ptq.QuantizeResult.
    ``scales``: "pow2" (default, PyTorch/ONNX) or "float" (default and only choice for Keras)."""
    from .ptq import quantize_model

    return quantize_model(model, calibration, output, weight_bits=weight_bits, scales=scales,
                          per_channel=per_channel, equalize=equalize, bias_correction=bias_correction)
