"""``edgekit build``: a model -> a build directory, made by the backend of the target.

The backend (edgekit.backends: Cortex-M firmware, or an hls4ml project for ``--target
fpga``) writes everything into a temporary sibling directory first and moves it into
place only when every step succeeded (edgekit.builddir), so a failed build never
leaves a half-written output directory behind.
"""
from __future__ import annotations

from pathlib import Path

from .backends import backend_for_target, backend_named
from .backends.base import BuildOptions
from .builddir import BuildResult


def build(model: str | Path, target: str, board: str | None, out_dir: str | Path, *, backend: str | None = None,
          io_type: str | None = None, reuse_factor: int | None = None, kernels: str | None = None,
          optimize: str | None = None) -> BuildResult:
    """Compile a QONNX model (or an int8 ``.tflite`` model) for ``target`` and ``board`` into ``out_dir``.

    Cortex-M targets (a core, e.g. ``cortex-m4``): ``kernels="optimized"`` (default) uses the
    DSP-extension kernels (docs/kernels.md) for the layers that fit them on cores that have it;
    ``"reference"`` keeps the portable reference kernels everywhere. Both compute the same integers.
    ``optimize``: "size", "balanced" (default: both keep weights at int8 in flash) or "speed"
    (int16 weights where the board's flash allows).

    ``target="fpga"`` writes an hls4ml project instead (``backend``: vitis/vivado,
    ``io_type``: io_parallel/io_stream, ``reuse_factor``); see edgekit/backends/hls.
    """
    options = BuildOptions(kernels=kernels, optimize=optimize, hls_backend=backend, io_type=io_type, reuse_factor=reuse_factor)
    return backend_for_target(target).build(Path(model), target, board, Path(out_dir), options)


def build_summary(result: BuildResult) -> str:
    """What ``edgekit build`` prints about a finished build."""
    return backend_named(result.manifest.backend).build_summary(result)
