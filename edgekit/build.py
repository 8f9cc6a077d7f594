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
from .errors import TargetError

FPGA_TARGET = "fpga"


def resolve_target(target: str | None, board: str | None) -> str:
    """The target of a build: ``target`` as given, or the one ``board`` fixes (its core, or ``fpga``
    for an FPGA board). A target that contradicts the board is refused naming the board's."""
    from .backends.hls.boards import list_fpga_boards
    from .targets import get_board, list_boards

    if board is None:
        if target is None:
            raise TargetError("give --board (see `edgekit targets`; it fixes the core) or --target")
        return target
    if board in list_fpga_boards():
        if target not in (None, FPGA_TARGET):
            raise TargetError(f"board '{board}' is an FPGA board; use --target {FPGA_TARGET} (or leave --target out)")
        return FPGA_TARGET
    if target == FPGA_TARGET:
        return target  # the FPGA backend names its boards when this one is not among them
    if target is None and not board.endswith(".toml") and board not in list_boards():
        raise TargetError(f"unknown board '{board}'; Cortex-M boards: {', '.join(list_boards())}; FPGA boards: "
                          f"{', '.join(list_fpga_boards())}")
    core = get_board(board).core
    if target is not None and target != core:
        raise TargetError(f"board '{board}' has a {core}, not a {target}; use --target {core} (or leave --target out)")
    return core


def build(model: str | Path, target: str | None, board: str | None, out_dir: str | Path, *, backend: str | None = None,
          io_type: str | None = None, reuse_factor: int | None = None, kernels: str | None = None,
          optimize: str | None = None, io_buffers: str | None = None) -> BuildResult:
    """Compile a QONNX model (or an int8 ``.tflite`` model) for ``target`` and ``board`` into ``out_dir``.

    Cortex-M targets (a core, e.g. ``cortex-m4``): ``kernels="optimized"`` (default) uses the
    DSP-extension kernels (docs/kernels.md) for the layers that fit them on cores that have it;
    ``"reference"`` keeps the portable reference kernels everywhere. Both compute the same integers.
    ``optimize``: "size", "balanced" (default: both keep weights at int8 in flash) or "speed"
    (int16 weights where the board's flash allows). ``io_buffers``: "arena" (default: the model's
    input and output inside its arena, ``ek_model_input()``/``ek_model_output()``) or "caller"
    (``ek_model_run(input, output)`` on the caller's buffers); docs/c-api.md.

    ``target="fpga"`` writes an hls4ml project instead (``backend``: vitis/vivado,
    ``io_type``: io_parallel/io_stream, ``reuse_factor``); see edgekit/backends/hls.
    ``target=None``: the one ``board`` fixes (``resolve_target``).
    """
    target = resolve_target(target, board)
    if io_buffers is not None and target == "fpga":  # the FPGA backend's own options are its I/O types
        raise TargetError("--io-buffers applies to Cortex-M targets only (an FPGA build's I/O is --io-type)")
    options = BuildOptions(kernels=kernels, optimize=optimize, hls_backend=backend, io_type=io_type,
                           reuse_factor=reuse_factor, io_buffers=io_buffers)
    return backend_for_target(target).build(Path(model), target, board, Path(out_dir), options)


def build_summary(result: BuildResult) -> str:
    """What ``edgekit build`` prints about a finished build."""
    return backend_named(result.manifest.backend).build_summary(result)
