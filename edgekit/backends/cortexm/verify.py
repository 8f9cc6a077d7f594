"""The Cortex-M verify stages: the generated C compiled for the host, and the firmware on the
emulated board (QEMU), each run through the harness protocol (inputs.bin -> outputs.bin).

Their time limits scale with the model's work: the instructions one inference executes
(exact when ``edgekit profile`` has counted them, else bounded from the MACs and the
layer outputs) times the vectors, at a QEMU speed well below what a loaded machine
gives, never below :data:`TIME_LIMIT_FLOOR`.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import TargetError, VerificationError
from ...manifest import Manifest
from ...targets import Board
from ...stages import StageResult, VerifyReport, compare
from . import toolchain as tc
from .memory import describe_peak_ram

#: the shortest time limit, in seconds (what every stage had before limits scaled)
TIME_LIMIT_FLOOR = 120.0
#: instructions per second QEMU runs at the least on a loaded machine (unloaded: hundreds of millions)
SLOWEST_INSTRUCTIONS_PER_SECOND = 20e6
#: instructions per MAC the slowest kernels need at most (reference kernels on a Cortex-M0+: about 10)
INSTRUCTIONS_PER_MAC_BOUND = 20
#: instructions per output byte of a layer at most (elementwise ops, pooling, requantization, copies)
INSTRUCTIONS_PER_OUTPUT_BYTE_BOUND = 64
#: a profiled count depends on the input only through data-dependent branches: this margin covers them
PROFILED_MARGIN = 2.0


def instructions_per_inference_bound(manifest: Manifest) -> int:
    """At most how many instructions one inference executes: twice the profiled count if the build
    was profiled, else a bound from its MACs and the bytes its layers write."""
    if manifest.profile and manifest.profile.get("instructions"):
        return int(PROFILED_MARGIN * manifest.profile["instructions"])
    output_bytes = sum(layer.get("output_bytes", 0) for layer in manifest.layers or [])
    return INSTRUCTIONS_PER_MAC_BOUND * int(manifest.macs) + INSTRUCTIONS_PER_OUTPUT_BYTE_BOUND * output_bytes


def time_limit(manifest: Manifest, vectors: int) -> float:
    """Seconds a run of ``vectors`` inferences may take on QEMU (the host is faster) before it counts as hung.

    The harness runs the first vector once more (to measure the arena it touches), hence ``vectors + 1``.
    """
    work = (vectors + 1) * instructions_per_inference_bound(manifest)
    return max(TIME_LIMIT_FLOOR, float(math.ceil(work / SLOWEST_INSTRUCTIONS_PER_SECOND)))


class CortexmVerifyReport(VerifyReport):
    def to_json(self) -> dict:
        d = super().to_json()
        d["emulated_board"] = self.extra.get("emulated_board")  # the board QEMU ran the firmware on
        return d

    def footer_lines(self) -> list[str]:
        """What the firmware occupies, and what the board measured."""
        m = self.memory
        standin = self.extra.get("emulated_board")
        lines = [f"emulated on {standin}, the same core as {self.board}: the same generated C relinked for it"] \
            if standin and standin != self.board else []
        lines += [f"firmware on {self.board}: flash {m['flash_bytes']} B (code {m['text_bytes']}, "
                 f"constants {m['rodata_bytes']}), RAM {m['ram_bytes']} B (arena {m['arena_bytes']}, "
                 f"other .bss {m['bss_bytes'] - m['arena_bytes']}, .data {m['data_bytes']}, stack reserved "
                 f"{m['stack_bytes']}, stack used {m.get('stack_used_bytes', '?')})"]
        if "arena_touched_bytes" in m:
            lines.append(f"measured on {standin or 'the board'}: arena written up to byte {m['arena_touched_bytes']} of "
                         f"{m['arena_bytes']} planned; inference stack {m.get('inference_stack_bytes', '?')} B"
                         + (f" (static analysis: {m['inference_stack_static_bytes']} B)"
                            if "inference_stack_static_bytes" in m else ""))
        if "peak_ram_bytes" in m:
            lines.append(f"{describe_peak_ram(m)}; flash {m['flash_bytes']} B "
                         "(vectors, .text, .rodata, .ARM.exidx, .data)")
        return lines


def run_binary(runner: Callable[[Path], object], codes: np.ndarray, dtype: str, out_count: int,
               out_dtype: str) -> tuple[np.ndarray, str]:
    """Run the harness (``runner(workdir)``) on ``codes``; its outputs (N, out_count) and its log."""
    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as d:
        work = Path(d)
        codes.astype(np.dtype(dtype)).tofile(work / "inputs.bin")
        proc = runner(work)
        out = np.fromfile(work / "outputs.bin", dtype=np.dtype(out_dtype))
    if out.size != codes.shape[0] * out_count:
        raise VerificationError(f"the harness wrote {out.size} outputs, expected {codes.shape[0] * out_count}")
    return out.reshape(codes.shape[0], out_count), proc.stdout + proc.stderr


#: what the harness prints -> the report's memory key
MEASURED = {"EK_STACK_USED": "stack_used_bytes", "EK_INFERENCE_STACK": "inference_stack_bytes",
            "EK_ARENA_TOUCHED": "arena_touched_bytes"}


def host_stage(build_dir: Path, manifest: Manifest, codes: np.ndarray, ref: np.ndarray, out_dtype: str,
               timeout: float) -> StageResult:
    exe = build_dir / manifest.host_runner
    got, _ = run_binary(lambda w: tc.run_host(exe, w, timeout=timeout), codes, manifest.input["dtype"],
                        ref.shape[1], out_dtype)
    return compare("host C", got, ref, True)


def emulated_firmware(build_dir: Path, manifest: Manifest, workdir: Path) -> tuple[Path, Board]:
    """The firmware to run on QEMU and the board it runs on: the build's own when QEMU emulates its
    board, else the same generated C and harness relinked in ``workdir`` for the emulated board with
    the same core (the stand-in: mps2-an386 for a NUCLEO-L4R5ZI's Cortex-M4; for a Cortex-M0+ the
    micro:bit, or mps2-an385 when it does not fit its 16 KiB of RAM), as ``edgekit profile`` does."""
    from .profile.runner import firmware_for, profile_boards_for

    candidates = profile_boards_for(manifest, None)
    for i, board in enumerate(candidates):
        try:
            return firmware_for(build_dir, manifest, board, workdir), board
        except TargetError:  # does not fit this stand-in's memory: the next one
            if i == len(candidates) - 1:
                raise
    raise AssertionError("profile_boards_for returns at least one board")


def qemu_stage(build_dir: Path, manifest: Manifest, codes: np.ndarray, ref: np.ndarray, out_dtype: str,
               timeout: float, measured: dict) -> StageResult:
    """The firmware on the emulated board; ``measured`` gets what the harness measured and
    ``emulated_board``, the board that ran it (a stand-in for a real board)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-relink-") as d:
        elf, board = emulated_firmware(build_dir, manifest, Path(d))
        got, log = run_binary(lambda w: tc.run_qemu(elf, board.qemu_machine, w, timeout=timeout), codes,
                              manifest.input["dtype"], ref.shape[1], out_dtype)
    for line in log.splitlines():
        key, _, value = line.partition("=")
        if key in MEASURED and value.strip().isdigit():
            measured[MEASURED[key]] = int(value)
    measured["emulated_board"] = board.name
    note = "" if board.name == manifest.board else f"stand-in for {manifest.board}: the same C relinked"
    return compare(f"firmware ({board.qemu_machine})", got, ref, True, note)
