"""``edgekit build``: a model -> a build directory, made by the backend of the target.

The backend (edgekit.backends: Cortex-M firmware, or an hls4ml project for ``--target
fpga``) writes everything into a temporary sibling directory first and moves it into
place only when every step succeeded (edgekit.builddir), so a failed build never
leaves a half-written output directory behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import load_npy
from .backends import backend_for_target, backend_named
from .backends.base import BuildOptions
from .builddir import BuildResult
from .errors import TargetError
from .frontends.qonnx_input import FixedInput

FPGA_TARGET = "fpga"


def fixed_input(input_bits: int | None, calibration) -> FixedInput | None:
    """``--input-bits N --calibration x.npy`` as the front end takes them (both or neither)."""
    if input_bits is None and calibration is None:
        return None
    if input_bits is None or calibration is None:
        given, missing = ("--input-bits", "--calibration x.npy") if calibration is None else \
            ("--calibration", "--input-bits N")
        raise TargetError(f"{given} needs {missing} as well: together they fix the input quantizer of a model whose "
                          "first layer reads the float input")
    if isinstance(input_bits, bool) or not isinstance(input_bits, int) or not 1 <= input_bits <= 16:
        raise TargetError(f"--input-bits {input_bits!r}: give a number of bits from 1 to 16")
    if isinstance(calibration, np.ndarray):
        return FixedInput(input_bits, calibration, "the calibration array")
    data = load_npy(calibration, "float calibration samples in the model's input layout", TargetError)
    return FixedInput(input_bits, data, str(calibration))


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
          optimize: str | None = None, io_buffers: str | None = None, input_bits: int | None = None,
          calibration: str | Path | np.ndarray | None = None) -> BuildResult:
    """Compile a QONNX model (or an int8 ``.tflite`` model) for ``target`` and ``board`` into ``out_dir``.

    Cortex-M targets (a core, e.g. ``cortex-m4``): ``kernels="optimized"`` (default) uses the
    DSP-extension kernels (docs/kernels.md) for the layers that fit them on cores that have it;
    ``"reference"`` keeps the portable reference kernels everywhere. Both compute the same integers.
    ``optimize``: "size" (weights kept at int8 in flash), "balanced" (default: int8, widened to int16
    only for the layers that gain most within the default flash goal) or "speed" (int16 weights where
    the board's flash allows); with ``kernels="reference"`` it must stay None. ``io_buffers``: "arena" (default: the model's
    input and output inside its arena, ``ek_model_input()``/``ek_model_output()``) or "caller"
    (``ek_model_run(input, output)`` on the caller's buffers); docs/c-api.md.

    ``target="fpga"`` writes an hls4ml project instead (``backend``: vitis/vivado,
    ``io_type``: io_parallel/io_stream, ``reuse_factor``); see edgekit/backends/hls.
    ``target=None``: the one ``board`` fixes (``resolve_target``).

    ``input_bits`` with ``calibration`` (a .npy file or an array of float samples in the model's
    input layout): the input quantizer of a QONNX model whose first layer reads the float input
    (QKeras-style), a power-of-two scale covering the samples (docs/limits.md).
    """
    target = resolve_target(target, board)
    if io_buffers is not None and target == "fpga":  # the FPGA backend's own options are its I/O types
        raise TargetError("--io-buffers applies to Cortex-M targets only (an FPGA build's I/O is --io-type)")
    options = BuildOptions(kernels=kernels, optimize=optimize, hls_backend=backend, io_type=io_type,
                           reuse_factor=reuse_factor, io_buffers=io_buffers,
                           fixed_input=fixed_input(input_bits, calibration))
    return backend_for_target(target).build(Path(model), target, board, Path(out_dir), options)


def build_summary(result: BuildResult) -> str:
    """What ``edgekit build`` prints about a finished build."""
    return backend_named(result.manifest.backend).build_summary(result)
