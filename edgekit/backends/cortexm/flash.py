"""``edgekit flash``: run a build's firmware on its board and read the results back.

* Emulated boards (``qemu_machine`` set): the firmware runs on qemu-system-arm.
* Real boards: pyocd (default) or openocd programs the ELF through the debug probe,
  resets the board and serves the harness's semihosting (inputs.bin in, outputs.bin
  out, console lines) until the firmware exits. Boards with ``load = "ram"`` (RP2040)
  get the image written into SRAM and started at its reset handler instead.

Either way the outputs are compared element by element with edgekit's simulator, like
``edgekit verify``'s firmware stage. A missing tool, a missing probe or a board that is
not the build's fails within seconds with one clear message; every external command
runs under a time limit, in its own process group, and is killed when it is exceeded.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import TargetError, ToolchainError, VerificationError
from ...targets import Board, get_board
from . import toolchain as tc

PROBES = ("pyocd", "openocd")
PROBE_LIST_TIMEOUT = 20.0
NO_PROBE_HINTS = ("open failed", "unable to find a matching cmsis-dap device", "no j-link device found",
                  "no device found", "error: no stlink", "unable to open", "libusb_open() failed",
                  "no available debug probes", "no debug probe found")


class FlashError(ToolchainError):
    """The board could not be reached or programmed (no probe, tool failure, timeout)."""


@dataclass
class FlashResult:
    board: str
    tool: str
    commands: list[list[str]]
    vectors: int
    elements: int
    mismatches: int
    max_lsb: int
    exit_code: int
    log: str
    stack_used: int | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.mismatches == 0

    def summary(self) -> str:
        res = "ok: bit-exact with the simulator" if self.ok else "FAIL: outputs differ from the simulator"
        return (f"{self.board} via {self.tool}: {self.vectors} vectors, {self.mismatches}/{self.elements} output "
                f"elements differ (max {self.max_lsb} LSB), stack used "
                f"{self.stack_used if self.stack_used is not None else '?'} B, {self.seconds:.1f} s: {res}")


# ---------------------------------------------------------------------------------------
# Tools and commands
# ---------------------------------------------------------------------------------------
def pyocd_executable() -> str:
    """pyocd's command: $EDGEKIT_PYOCD if set, else `pyocd` on PATH or beside this Python."""
    env = os.environ.get("EDGEKIT_PYOCD")
    candidates = [env] if env else ["pyocd", str(Path(sys.executable).parent / "pyocd")]
    for cand in candidates:
        path = shutil.which(cand)
        if path:
            return path
    raise ToolchainError(f"{env or 'pyocd'} not found (needed to flash real boards); install it with "
                         "`pip install 'edgekit[boards]'` (pyocd>=0.36), or use --probe openocd"
                         + ("; or fix EDGEKIT_PYOCD" if env else ""))


def openocd_executable() -> str:
    return tc.find_tool("EDGEKIT_OPENOCD", "openocd", "needed to flash real boards with --probe openocd; "
                        "`apt-get install openocd`, or use --probe pyocd")


def _probe_config(board: Board):
    if board.probe is None:
        raise TargetError(f"board '{board.name}' has no [probe] section: edgekit does not know how to reach it")
    return board.probe


def pyocd_run_command(board: Board, elf: Path, uid: str | None = None, timeout: float = 120.0) -> list[str]:
    """The command that programs ``elf``, resets and serves semihosting (run in the work directory)."""
    probe = _probe_config(board)
    if not probe.pyocd_target:
        raise TargetError(f"board '{board.name}' has no pyocd_target; use --probe openocd")
    cmd = [sys.executable, "-m", "edgekit.backends.cortexm.pyocd_run", "--target", probe.pyocd_target,
           "--elf", str(elf), "--load", board.load, "--timeout", f"{timeout:g}"]
    if uid:
        cmd += ["--uid", uid]
    return cmd


def pyocd_list_command() -> list[str]:
    return [pyocd_executable(), "list", "--probes"]


def openocd_command(board: Board, elf: Path, uid: str | None = None, openocd: str = "openocd") -> list[str]:
    """openocd: connect, program (or load into RAM), enable semihosting and run. openocd serves
    the semihosting file I/O from its working directory and exits with the firmware's code."""
    probe = _probe_config(board)
    if not probe.openocd_config:
        raise TargetError(f"board '{board.name}' has no openocd_config; use --probe pyocd")
    cmd = [openocd]
    for cfg in probe.openocd_config:
        cmd += ["-f", cfg]
    for c in probe.openocd_commands:
        cmd += ["-c", c]
    if uid:
        cmd += ["-c", f"adapter serial {uid}"]
    cmd += ["-c", "init", "-c", "reset halt"]
    if board.load == "ram":
        sp, entry = _vector_table(elf)
        cmd += ["-c", f"load_image {{{elf}}}", "-c", f"mww 0xe000ed08 0x{board.ram.origin:08x}",
                "-c", f"reg msp 0x{sp:08x}", "-c", "reg xPSR 0x01000000", "-c", "arm semihosting enable",
                "-c", f"resume 0x{entry & ~1:08x}"]
    else:
        cmd += ["-c", f"program {{{elf}}} verify", "-c", "arm semihosting enable", "-c", "reset run"]
    return cmd


def _vector_table(elf: Path) -> tuple[int, int]:
    """Initial SP and reset handler of a linked firmware (from its symbols)."""
    syms = {s["name"]: s["addr"] for s in tc.symbols(elf)}
    try:
        return syms["__stack_top__"], syms["reset_handler"]
    except KeyError as e:
        raise ToolchainError(f"{elf}: no {e.args[0]} symbol; not an edgekit firmware") from None


# ---------------------------------------------------------------------------------------
# Running commands with a time limit, streaming their output
# ---------------------------------------------------------------------------------------
def run_streaming(cmd: list[str], cwd: Path, timeout: float, on_line: Callable[[str], None] | None,
                  what: str) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; pass each output line to ``on_line`` as it arrives.
    Kills the whole group and raises FlashError when ``timeout`` is exceeded."""
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    except OSError as e:
        raise ToolchainError(f"{what}: cannot run {cmd[0]} ({e.strerror})") from None
    import selectors

    lines: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(proc)
                raise FlashError(f"{what} did not finish within {timeout:.0f} s and was stopped: {' '.join(cmd)}"
                                 + (f"\nlast output: {lines[-1].strip()}" if lines else ""))
            if sel.select(timeout=min(left, 0.5)):
                line = proc.stdout.readline()
                if line == "":
                    break
                lines.append(line)
                if on_line:
                    on_line(line.rstrip("\n"))
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise FlashError(f"{what} did not exit within {timeout:.0f} s: {' '.join(cmd)}") from None
    finally:
        sel.close()
        if proc.poll() is None:
            _kill(proc)
    return rc, "".join(lines)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def check_pyocd_probe(uid: str | None = None, timeout: float = PROBE_LIST_TIMEOUT) -> str:
    """``pyocd list --probes`` under a time limit; FlashError if no (matching) probe is attached."""
    cmd = pyocd_list_command()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlashError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s (USB or probe problem)") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise FlashError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {out.strip()[-500:]}")
    if "no available debug probes" in out.lower() or not out.strip():
        raise FlashError("no debug probe found (`pyocd list --probes`: "
                         f"{out.strip().splitlines()[-1] if out.strip() else 'nothing listed'}); connect the "
                         "board's debug USB port (and check the udev rules / permissions), or try --probe openocd")
    if uid and uid not in out:
        raise FlashError(f"no debug probe with unique ID {uid} (pyocd list --probes):\n{out.strip()}")
    return out


# ---------------------------------------------------------------------------------------
# edgekit flash
# ---------------------------------------------------------------------------------------
def flash(build_dir: str | Path, board: str | None = None, probe: str = "pyocd", uid: str | None = None,
          inputs: str | Path | np.ndarray | None = None, count: int = 16, seed: int = 0, timeout: float | None = None,
          on_line: Callable[[str], None] | None = None) -> FlashResult:
    """Run the build's harness firmware on ``board`` (default: the build's board) and compare.
    ``timeout``: seconds the run may take (default: scaled with the model's work, as in verify)."""
    from ...ir.graph import Graph
    from ...manifest import load_manifest
    from ...sim import quantize_input, simulate
    from ...stages import check_timeout, load_float_inputs
    from .profile.runner import build_board
    from .verify import time_limit

    check_timeout(timeout)

    build_dir = Path(build_dir).resolve()
    manifest = load_manifest(build_dir)
    brd = build_board(manifest)
    if board is not None and board not in (manifest.board, brd.path):
        try:
            core = get_board(board).core
        except TargetError:
            core = "<its core>"
        raise TargetError(f"{build_dir} was built for {manifest.board} ({manifest.target}), not {board}; "
                          f"rebuild it: edgekit build MODEL --target {core} --board {board} -o DIR")
    if probe not in PROBES:
        raise TargetError(f"unknown probe tool '{probe}'; choose {' or '.join(PROBES)}")
    elf = build_dir / manifest.firmware
    graph = Graph.load(build_dir)

    # Check the tools before any work, then the probe.
    if brd.emulated:
        tool, qemu = "qemu", tc.qemu()
    elif probe == "pyocd":
        tool = "pyocd"
        pyocd_run_command(brd, elf, uid)  # board has what pyocd needs
        check_pyocd_probe(uid)
    else:
        tool, openocd = "openocd", openocd_executable()

    x, source = load_float_inputs(graph, inputs, count, seed)
    codes = quantize_input(graph, x)
    if timeout is None:
        timeout = time_limit(manifest, x.shape[0])
    out_t = graph.tensors[graph.outputs[0]]
    ref = simulate(graph, codes)[graph.outputs[0]].reshape(x.shape[0], -1)

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgekit-flash-") as d:
        work = Path(d)
        codes.astype(np.dtype(manifest.input["dtype"])).tofile(work / "inputs.bin")
        if tool == "qemu":
            cmds = [tc.qemu_command(elf, brd.qemu_machine)]
            cmds[0][0] = qemu
        elif tool == "pyocd":
            cmds = [pyocd_list_command(), pyocd_run_command(brd, elf, uid, timeout)]
        else:
            cmds = [openocd_command(brd, elf, uid, openocd)]
        rc, log = run_streaming(cmds[-1], work, timeout + 15, on_line, f"running the firmware on {brd.name}")
        _check_exit(tool, rc, log, brd)
        got = np.fromfile(work / "outputs.bin", dtype=np.dtype(out_t.dtype)) \
            if (work / "outputs.bin").is_file() else np.zeros(0)
    if got.size != ref.size:
        raise VerificationError(f"the firmware on {brd.name} wrote {got.size} output elements, expected {ref.size}"
                                f" (exit {rc})")
    diff = np.abs(got.reshape(ref.shape).astype(np.int64) - ref.astype(np.int64))
    stack = next((int(line.split("=")[1]) for line in log.splitlines() if line.startswith("EK_STACK_USED=")), None)
    return FlashResult(brd.name, tool, cmds, int(x.shape[0]), int(diff.size), int(np.count_nonzero(diff)),
                       int(diff.max()) if diff.size else 0, rc, log, stack, time.monotonic() - t0,
                       {"input_source": source})


def _check_exit(tool: str, rc: int, log: str, board: Board) -> None:
    from . import pyocd_run

    low = log.lower()
    if tool == "pyocd" and rc == pyocd_run.NO_PROBE or tool == "openocd" and rc != 0 and any(
            h in low for h in NO_PROBE_HINTS):
        last = [ln for ln in log.strip().splitlines() if "rror" in ln] or log.strip().splitlines()[-1:]
        raise FlashError(f"no debug probe found by {tool} for {board.name} ({last[-1].strip() if last else ''}); "
                         f"connect the board's debug USB port ({board.probe.interface if board.probe else ''})")
    if tool == "pyocd" and rc in (pyocd_run.CONNECT_FAILED, pyocd_run.HALTED, pyocd_run.TIMEOUT):
        hint = ""
        if board.probe and not board.probe.pyocd_builtin:
            hint = f"; {board.probe.notes}"
        raise FlashError(f"pyocd could not run the firmware on {board.name} (exit {rc}):\n{log.strip()[-1500:]}{hint}")
    if rc != 0:
        what = {2: "harness I/O error (semihosting files)", 3: "inputs.bin is not a whole number of vectors"}.get(
            rc, f"fault exception {rc - 100}" if 100 <= rc < 400 else f"exit {rc}")
        raise FlashError(f"the firmware on {board.name} failed ({what}) via {tool}:\n{log.strip()[-1500:]}")
