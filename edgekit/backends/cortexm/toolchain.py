"""External tools of the Cortex-M back end: host cc, arm-none-eabi-gcc, size, qemu-system-arm.

Each tool can be overridden with an environment variable (EDGEKIT_HOST_CC,
EDGEKIT_ARM_GCC, EDGEKIT_QEMU); a missing tool raises ToolchainError with the
install command rather than failing halfway through a build.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ...errors import ToolchainError
from ...resources import resource_dir
from ...targets import Board, Core

INSTALL_HINT = ("run `make setup` from the edgekit checkout, or `apt-get install gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm`")

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
FIRMWARE_SOURCES = ["harness.c", "startup_cortexm.c", "semihosting.c", "io_semihost.c", "libc_min.c"]
HOST_SOURCES = ["harness.c", "io_stdio.c"]


def find_tool(env_var: str, default: str, purpose: str) -> str:
    name = os.environ.get(env_var, default)
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found ({purpose}); {INSTALL_HINT}; "
                             f"or point {env_var} at it")
    return path


def arm_gcc() -> str:
    return find_tool("EDGEKIT_ARM_GCC", "arm-none-eabi-gcc", "needed to cross-compile the firmware")


def arm_size() -> str:
    gcc = arm_gcc()
    candidate = gcc[: -len("gcc")] + "size" if gcc.endswith("gcc") else "arm-none-eabi-size"
    return find_tool("EDGEKIT_ARM_SIZE", candidate, "needed to measure the firmware")


def host_cc() -> str:
    return find_tool("EDGEKIT_HOST_CC", "gcc", "needed to compile the generated C for the host")


def qemu() -> str:
    return find_tool("EDGEKIT_QEMU", "qemu-system-arm", "needed to run firmware on emulated boards")


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{what} did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
    except OSError as e:
        raise ToolchainError(f"{what}: cannot run {cmd[0]} ({e.strerror})") from None
    if proc.returncode != 0:
        raise ToolchainError(f"{what} failed (exit {proc.returncode}):\n{' '.join(cmd)}\n"
                             f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return proc


def copy_firmware_sources(dest: Path) -> None:
    src = resource_dir("firmware")
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix in (".c", ".h"):
            shutil.copyfile(f, dest / f.name)


def compile_firmware(build: Path, core: Core, board: Board, linker_script: Path) -> Path:
    """Cross-compile src/ + firmware/ into firmware.elf (no libc, -O2, sections gc'd)."""
    elf = build / "firmware.elf"
    sources = [build / "src" / "model.c"] + [build / "firmware" / f for f in FIRMWARE_SOURCES]
    cmd = [arm_gcc(), *core.cflags, *WARNINGS, "-O2", "-g", "-ffreestanding", "-nostdlib",
           "-fno-tree-loop-distribute-patterns", "-ffunction-sections", "-fdata-sections",
           f"-I{build / 'src'}", f"-I{build / 'firmware'}", *map(str, sources),
           f"-T{linker_script}", "-Wl,--gc-sections", f"-Wl,-Map={build / 'firmware.map'}", "-lgcc",
           "-o", str(elf)]
    _run(cmd, "cross-compiling the firmware")
    return elf


def compile_host(build: Path) -> Path:
    """Compile the same model.c and harness for this machine (stdio I/O)."""
    exe = build / "host" / "ek_host_runner"
    exe.parent.mkdir(exist_ok=True)
    sources = [build / "src" / "model.c"] + [build / "firmware" / f for f in HOST_SOURCES]
    cmd = [host_cc(), *WARNINGS, "-O2", f"-I{build / 'src'}", f"-I{build / 'firmware'}",
           *map(str, sources), "-o", str(exe)]
    _run(cmd, "compiling the generated C for the host")
    return exe


def section_sizes(elf: Path) -> dict[str, int]:
    out = _run([arm_size(), "-A", str(elf)], "reading firmware section sizes").stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def memory_usage(sizes: dict[str, int]) -> dict[str, int]:
    """Flash and RAM bytes from section sizes (.data counts in both: image in flash, copy in RAM)."""
    flash_sections = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
    ram_sections = (".data", ".bss", ".stack")
    return {
        "flash_bytes": sum(sizes.get(s, 0) for s in flash_sections),
        "ram_bytes": sum(sizes.get(s, 0) for s in ram_sections),
        "text_bytes": sizes.get(".text", 0) + sizes.get(".isr_vector", 0),
        "rodata_bytes": sizes.get(".rodata", 0),
        "data_bytes": sizes.get(".data", 0),
        "bss_bytes": sizes.get(".bss", 0),
        "stack_bytes": sizes.get(".stack", 0),
    }


def run_host(exe: Path, workdir: Path) -> subprocess.CompletedProcess:
    return _run([str(exe)], "running the host build", cwd=workdir, timeout=120)


def run_qemu(elf: Path, machine: str, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the harness firmware on an emulated board; inputs.bin/outputs.bin live in ``workdir``."""
    cmd = [qemu(), "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except OSError as e:
        raise ToolchainError(f"cannot run {cmd[0]} ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"the firmware did not finish on {machine} within {timeout:.0f} s "
                             f"(hung or too many vectors): {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise ToolchainError(f"the firmware on {machine} exited with {proc.returncode}:\n"
                             f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return proc
