"""External tools of the Cortex-M back end: host cc, arm-none-eabi-gcc, size, qemu-system-arm.

Each tool can be overridden with an environment variable (EDGEKIT_HOST_CC,
EDGEKIT_ARM_GCC, EDGEKIT_QEMU); a missing tool raises ToolchainError with the
install command rather than failing halfway through a build.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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


def run_tool(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{what} did not finish within {timeout:g} s: {' '.join(cmd)}") from None
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


FIRMWARE_CFLAGS = ["-O2", "-g", "-ffreestanding", "-fno-tree-loop-distribute-patterns", "-ffunction-sections",
                   "-fdata-sections"]


#: Region length of the measuring link (same origins, so the same addresses): 240 MiB keeps
#: every board's flash window below its RAM.
OVERSIZE_LENGTH = 0x0F000000


def render_linker_script(core: Core, board: Board, path: Path, oversize: bool = False) -> Path:
    """Write the linker script for ``board`` (targets/ld/cortexm.ld.j2).

    ``oversize`` lifts the region lengths (same origins, so the same addresses) to measure
    an image that does not fit, so that the fit check can say by how much.
    """
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("targets") / "ld")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    big = OVERSIZE_LENGTH
    path.write_text(env.get_template("cortexm.ld.j2").render(
        core=core, board=board, stack_bytes=board.stack_bytes,
        flash_length=big if oversize else board.flash.length, ram_length=big if oversize else board.ram.length))
    return path


def compile_objects(build: Path, core: Core, optimization: str = "-O2") -> list[Path]:
    """Cross-compile src/model.c and the runtime, one object each under obj/ (the map file then
    attributes every section to its source, which the flash/RAM breakdown relies on).
    ``optimization`` replaces -O2 (tests compare the firmware's outputs across levels)."""
    cflags = [optimization if f == "-O2" else f for f in FIRMWARE_CFLAGS]
    objdir = build / "obj"
    objdir.mkdir(exist_ok=True)
    sources = [build / "src" / "model.c"] + [build / "firmware" / f for f in FIRMWARE_SOURCES]
    objects = []
    for src in sources:
        obj = objdir / (src.stem + ".o")
        # -fstack-usage on the model: obj/model.su feeds the static stack analysis (stack.py)
        extra = ["-fstack-usage"] if src.name == "model.c" else []
        run_tool([arm_gcc(), *core.cflags, *WARNINGS, *cflags, *extra, f"-I{build / 'src'}",
              f"-I{build / 'firmware'}", "-c", str(src), "-o", str(obj)], f"cross-compiling {src.name}")
        objects.append(obj)
    return objects


def link_firmware(build: Path, core: Core, objects: list[Path], linker_script: Path,
                  elf: Path | None = None) -> Path:
    elf = elf or build / "firmware.elf"
    run_tool([arm_gcc(), *core.cflags, "-nostdlib", *map(str, objects), f"-T{linker_script}", "-Wl,--gc-sections",
          f"-Wl,-Map={elf.with_suffix('.map')}", "-lgcc", "-o", str(elf)], "linking the firmware")
    return elf


def compile_host(build: Path) -> Path:
    """Compile the same model.c and harness for this machine (stdio I/O)."""
    exe = build / "host" / "ek_host_runner"
    exe.parent.mkdir(exist_ok=True)
    sources = [build / "src" / "model.c"] + [build / "firmware" / f for f in HOST_SOURCES]
    cmd = [host_cc(), *WARNINGS, "-O2", f"-I{build / 'src'}", f"-I{build / 'firmware'}",
           *map(str, sources), "-o", str(exe)]
    run_tool(cmd, "compiling the generated C for the host")
    return exe


def _binutil(name: str) -> str:
    gcc = arm_gcc()
    candidate = gcc[: -len("gcc")] + name if gcc.endswith("gcc") else f"arm-none-eabi-{name}"
    return find_tool(f"EDGEKIT_ARM_{name.upper()}", candidate, "needed to analyse the firmware")


def symbols(elf: Path) -> list[dict]:
    """Defined symbols with a size: name, address, size, type letter (nm: T/t code, R/r
    read-only data, D/d data, B/b bss), in address order."""
    out = run_tool([_binutil("nm"), "-S", "-n", "--defined-only", str(elf)], "reading firmware symbols").stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.append({"name": parts[3], "addr": int(parts[0], 16), "size": int(parts[1], 16),
                         "type": parts[2]})
        elif len(parts) == 3:  # no size (linker-script symbols such as __stack_top__)
            syms.append({"name": parts[2], "addr": int(parts[0], 16), "size": 0, "type": parts[1]})
    return syms


def disassemble(elf: Path, start: int | None = None, stop: int | None = None, arch: str | None = None) -> str:
    # the architecture (e.g. armv8.1-m.main) makes objdump decode Helium (MVE) instructions, which it
    # otherwise prints as coprocessor instructions
    cmd = [_binutil("objdump"), "-d", "--no-show-raw-insn"] + ([f"--architecture={arch}"] if arch else [])
    if start is not None:
        cmd += [f"--start-address=0x{start:x}", f"--stop-address=0x{stop:x}"]
    return run_tool([*cmd, str(elf)], "disassembling the firmware").stdout


def loaded_image(elf: Path) -> str:
    """What the firmware puts in the board's memory, as Intel HEX (addresses and bytes): equal for
    two builds of the same program even when their ELF files differ (paths in the debug info)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-image-") as d:
        out = Path(d) / "image.hex"
        run_tool([_binutil("objcopy"), "-O", "ihex", str(elf), str(out)], "reading the firmware image")
        return out.read_text()


def section_layout(elf: Path) -> list[dict]:
    """Allocated sections: name, size, VMA (run address), LMA (load address), loaded (has contents)."""
    out = run_tool([_binutil("objdump"), "-h", str(elf)], "reading firmware sections").stdout
    rows, lines = [], out.splitlines()
    for i, line in enumerate(lines[:-1]):
        f = line.split()
        if len(f) >= 7 and f[0].isdigit() and f[1].startswith("."):
            flags = lines[i + 1]
            if "ALLOC" in flags:
                rows.append({"name": f[1], "size": int(f[2], 16), "vma": int(f[3], 16), "lma": int(f[4], 16),
                             "loaded": "LOAD" in flags})
    return rows


def section_sizes(elf: Path) -> dict[str, int]:
    out = run_tool([arm_size(), "-A", str(elf)], "reading firmware section sizes").stdout
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


def run_host(exe: Path, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_tool([str(exe)], "running the host build", cwd=workdir, timeout=timeout)


def qemu_command(elf: Path, machine: str, extra: list[str] | None = None) -> list[str]:
    return [qemu(), "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf), *(extra or [])]


def run_qemu(elf: Path, machine: str, workdir: Path, timeout: float = 120,
             extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the harness firmware on an emulated board; inputs.bin/outputs.bin live in ``workdir``.
    ``extra``: more QEMU arguments (e.g. ``-plugin`` for instruction counting)."""
    cmd = qemu_command(elf, machine, extra)
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except OSError as e:
        raise ToolchainError(f"cannot run {cmd[0]} ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"the firmware did not finish on {machine} within {timeout:g} s (hung, or more "
                             f"work than that; `edgekit verify --timeout SECONDS` sets the limit): "
                             f"{' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise ToolchainError(f"the firmware on {machine} exited with {proc.returncode}:\n"
                             f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return proc
