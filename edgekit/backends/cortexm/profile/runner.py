"""Running a build's firmware on QEMU under edgekit's instruction-count plugin: which board,
which firmware (relinked for another emulated board if needed), which code zones, and
what the plugin reports."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ....errors import BuildDirError, TargetError, ToolchainError
from ....manifest import Manifest
from ....targets import Board, board_from_json, emulated_boards, get_board, get_core
from .. import toolchain as tc
from ..firmware import compile_firmware

GLUE = "ek_model_run"
LAYER_RE = re.compile(r"^ek_layer(\d+)_")


@dataclass
class Zone:
    name: str
    lo: int
    hi: int


@dataclass
class Counts:
    """What the plugin reported."""
    all_instructions: int
    zones: list[Zone]
    windows: list[list[int]]            # per window (inference): per zone, + unattributed last
    detail: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (zone, pc) -> (n, taken)
    outside: dict[int, int] = field(default_factory=dict)
    open_window: bool = False
    log: str = ""


def parse_plugin_output(text: str, zones: list[Zone]) -> Counts:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("ek_insn 1"):
        raise ToolchainError("the instruction-count plugin wrote no usable output")
    c = Counts(0, zones, [])
    for line in lines[1:]:
        f = line.split()
        if f[0] == "all":
            c.all_instructions = int(f[1])
        elif f[0] == "windows":
            c.open_window = f[3] == "1"
        elif f[0] == "w":
            c.windows.append([int(x) for x in f[2:]])
        elif f[0] == "p":
            c.detail[(int(f[1]), int(f[2], 16))] = (int(f[3]), int(f[4]))
        elif f[0] == "o":
            c.outside[int(f[1])] = int(f[2])
    if c.open_window:  # the last window never returned: not a whole inference
        c.windows.pop()
    return c


def run_counted(elf: Path, machine: str, workdir: Path, zones: list[Zone], code: tuple[int, int],
                start: int | None = None, stop: tuple[int, int] | None = None, detail: int = 0,
                timeout: float = 300) -> Counts:
    """Run ``elf`` on QEMU ``machine`` in ``workdir`` (inputs.bin there) under the plugin."""
    from ..qemu_plugin import find_plugin

    plugin = find_plugin()
    out = workdir / "ek_insn.txt"
    args = [f"file={plugin}", f"out={out}", f"lo=0x{code[0]:x}", f"hi=0x{code[1]:x}", f"detail={detail}"]
    if start is not None:
        args += [f"start=0x{start:x}", f"stop_lo=0x{stop[0]:x}", f"stop_hi=0x{stop[1]:x}"]
    args += [f"zone=0x{z.lo:x}:0x{z.hi:x}" for z in zones]
    if any("," in a for a in args):
        raise ToolchainError(f"a path contains a comma, which QEMU's -plugin option cannot take: {plugin} / {out}")
    proc = tc.run_qemu(elf, machine, workdir, timeout=timeout, extra=["-plugin", ",".join(args)])
    if not out.is_file():
        raise ToolchainError(f"QEMU ran but the instruction-count plugin wrote nothing ({plugin}); "
                             f"QEMU said: {(proc.stdout + proc.stderr).strip()[-500:]}")
    counts = parse_plugin_output(out.read_text(), zones)
    counts.log = proc.stdout + proc.stderr
    return counts


def build_board(manifest: Manifest) -> Board:
    """The board a build was made for: the description stored in its manifest (exactly what
    the build used, also for a board given as a TOML file), else the shipped board by name."""
    desc = manifest.board_description
    return board_from_json(desc) if desc else get_board(manifest.board)


#: Armv6-M code runs unchanged on an Armv7-M core: the fallback when the micro:bit's 16 KiB
#: of RAM is too small for a Cortex-M0+ build (the executed instructions are the same).
ARMV6M_FALLBACK = "mps2-an385"


def profile_boards_for(manifest: Manifest, board: str | None) -> list[Board]:
    """Emulated boards to count on, best first: ``board`` (same core as the build), else the
    build's own board when QEMU emulates it, else the emulated boards with the build's core
    (for a Cortex-M0+ also mps2-an385, whose Cortex-M3 executes Armv6-M code unchanged)."""
    core = manifest.target
    if board is not None:
        b = get_board(board)
        if not b.emulated:
            raise TargetError(f"board '{b.name}' is not emulated: instruction counts need a QEMU board with a "
                              f"{core}: {', '.join(emulated_boards(core)) or 'none'}")
        if b.core != core and not (core == "cortex-m0plus" and b.name == ARMV6M_FALLBACK):
            raise TargetError(f"the build is for a {core}, but board '{b.name}' has a {b.core}; rebuild with "
                              f"--target {b.core} --board {b.name}, or profile on "
                              f"{', '.join(emulated_boards(core)) or 'no emulated board'}")
        return [b]
    own = build_board(manifest)
    if own.emulated:
        return [own]
    names = emulated_boards(core) + ([ARMV6M_FALLBACK] if core == "cortex-m0plus" else [])
    if not names:
        raise TargetError(f"no emulated board carries a {core}; instruction counts need one")
    return [get_board(n) for n in names]


def firmware_for(build_dir: Path, manifest: Manifest, board: Board, workdir: Path) -> Path:
    """The build's firmware if it was linked for ``board``, else the same sources, compiled with
    the same flags, linked for it (TargetError if they do not fit its memory)."""
    if manifest.board == board.name:
        return build_dir / manifest.firmware
    core = get_core(manifest.target)
    tmp = workdir / f"relink-{board.name}"
    shutil.copytree(build_dir / "src", tmp / "src")
    shutil.copytree(build_dir / "firmware", tmp / "firmware")
    script = tc.render_linker_script(core, board, tmp / "firmware" / "link.ld")
    return compile_firmware(tmp, core, board, script)


def zones_for(syms: list[dict], layers: list[dict]) -> tuple[list[Zone], dict[int, int]]:
    """Zones for the plugin: ek_model_run (index 0) then every layer function; layer index -> zone."""
    funcs = [s for s in syms if s["type"] in "tT" and s["size"] > 0]
    glue = [s for s in funcs if s["name"] == GLUE]
    if not glue:
        raise BuildDirError(f"the firmware has no {GLUE} symbol")
    zones = [Zone(GLUE, glue[0]["addr"], glue[0]["addr"] + glue[0]["size"])]
    layer_zone = {}
    for s in funcs:
        m = LAYER_RE.match(s["name"])
        if m:
            idx = int(m.group(1))
            if idx >= len(layers):
                raise BuildDirError(f"firmware symbol {s['name']} names layer {idx}, but the build has "
                                    f"{len(layers)} layers")
            layer_zone.setdefault(idx, [])
            layer_zone[idx].append(len(zones))
            zones.append(Zone(s["name"], s["addr"], s["addr"] + s["size"]))
    return zones, layer_zone


def profile_inputs(graph, count: int, seed: int) -> np.ndarray:
    """Uniformly random input codes over the input quantizer's range (seeded)."""
    iq = graph.input_quant
    n = graph.tensors[graph.inputs[0]].size
    return np.random.default_rng(seed).integers(iq.qmin, iq.qmax + 1, size=(count, n))
