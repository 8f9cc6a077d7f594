"""Target registry: cores and boards described in targets/cores/*.toml and targets/boards/*.toml.

A core says how to compile for it (compiler flags), what it has (DSP extension, FPU,
MVE) and an approximate cycle cost per instruction class (``[timing]``, used by
``edgekit profile`` for its cycle estimate). A board says which core it carries, its
memory map (the flash and RAM regions the linker script uses, plus a descriptive list
of the physical regions), its clock, how the image is loaded (``load = "flash"`` or
``"ram"``), and how to reach it: a QEMU machine for emulated boards, pyocd/openocd
names for real ones.

``--board`` also accepts the path of a board TOML file (anything ending in ``.toml``),
so a custom board needs no change to edgekit.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import TargetError
from ..resources import resource_dir

#: Instruction classes of the cycle estimate (see docs/targets-and-profiling.md).
TIMING_CLASSES = ("alu", "it", "mul", "mac", "mul_long", "div", "simd", "load", "store", "ldm_base", "ldm_per_reg",
                  "branch", "branch_taken_extra", "call", "fpu", "mve", "other")


@dataclass(frozen=True)
class MemoryRegion:
    origin: int
    length: int

    @property
    def end(self) -> int:
        return self.origin + self.length


@dataclass(frozen=True)
class Core:
    name: str
    arch: str
    description: str
    cflags: tuple[str, ...]
    features: tuple[str, ...] = field(default_factory=tuple)
    timing: dict = field(default_factory=dict, hash=False, compare=False)
    timing_source: str = ""

    @property
    def has_dsp(self) -> bool:
        return "dsp" in self.features

    @property
    def has_fpu(self) -> bool:
        return "fpu" in self.features

    @property
    def has_mve(self) -> bool:
        return "mve" in self.features


@dataclass(frozen=True)
class Probe:
    """How a debug probe reaches a real board."""
    pyocd_target: str = ""
    pyocd_builtin: bool = True          # False: needs `pyocd pack install <pyocd_target>` once
    openocd_config: tuple[str, ...] = ()  # -f files, in order
    openocd_commands: tuple[str, ...] = ()  # -c commands before `init` (e.g. adapter speed)
    interface: str = ""                 # the probe on the board, in words
    notes: str = ""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    core: str
    flash: MemoryRegion
    ram: MemoryRegion
    stack_bytes: int
    clock_hz: int
    qemu_machine: str | None = None
    mcu: str = ""
    reset_clock_hz: int | None = None   # clock the firmware runs at (edgekit does not set up PLLs)
    load: str = "flash"                 # "flash": code+constants in flash; "ram": everything in RAM
    memory_map: tuple = ()              # descriptive: ({name, origin, length, note}, ...)
    probe: Probe | None = None
    notes: str = ""
    path: str = ""                      # the TOML file it came from

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None

    def to_json(self) -> dict:
        d = asdict(self)
        d["memory_map"] = [dict(r) for r in self.memory_map]
        return d


def _names(kind: str) -> list[str]:
    return sorted(p.stem for p in (resource_dir("targets") / kind).glob("*.toml"))


def list_cores() -> list[str]:
    return _names("cores")


def list_boards() -> list[str]:
    return _names("boards")


def _read_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML ({e})") from None
    except OSError as e:
        raise TargetError(f"{path}: cannot read ({e.strerror})") from None


def _read(kind: str, name: str) -> tuple[dict, Path]:
    path = resource_dir("targets") / kind / f"{name}.toml"
    if not path.is_file():
        singular = kind[:-1]
        raise TargetError(f"unknown {singular} '{name}'; available: {', '.join(_names(kind))}")
    return _read_file(path), path


def _require(d: dict, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise TargetError(f"{path}: missing {', '.join(missing)}")


def get_core(name: str) -> Core:
    d, path = _read("cores", name)
    _require(d, ("name", "arch", "description", "cflags"), path)
    timing = dict(d.get("timing", {}))
    source = timing.pop("source", "")
    unknown = set(timing) - set(TIMING_CLASSES)
    if unknown:
        raise TargetError(f"{path}: unknown timing classes {sorted(unknown)}; known: {', '.join(TIMING_CLASSES)}")
    return Core(d["name"], d["arch"], d["description"], tuple(d["cflags"]), tuple(d.get("features", ())),
                {k: float(v) for k, v in timing.items()}, source)


def _region(d, key: str, path: Path) -> MemoryRegion:
    r = d.get(key)
    if not isinstance(r, dict) or set(r) != {"origin", "length"}:
        raise TargetError(f"{path}: '{key}' must be {{ origin = ..., length = ... }}")
    if r["length"] <= 0 or r["origin"] < 0 or r["origin"] + r["length"] > 1 << 32:
        raise TargetError(f"{path}: '{key}' region is outside the 32-bit address space or empty")
    return MemoryRegion(int(r["origin"]), int(r["length"]))


def board_from_dict(d: dict, path: Path) -> Board:
    _require(d, ("name", "description", "core", "flash", "ram", "stack_bytes", "clock_hz"), path)
    load = d.get("load", "flash")
    if load not in ("flash", "ram"):
        raise TargetError(f"{path}: load must be \"flash\" or \"ram\", not {load!r}")
    flash, ram = _region(d, "flash", path), _region(d, "ram", path)
    if load == "flash" and flash.origin < ram.end and ram.origin < flash.end:
        raise TargetError(f"{path}: flash and RAM regions overlap")
    probe = None
    if "probe" in d:
        p = d["probe"]
        probe = Probe(p.get("pyocd_target", ""), bool(p.get("pyocd_builtin", True)),
                      tuple(p.get("openocd_config", ())), tuple(p.get("openocd_commands", ())),
                      p.get("interface", ""), p.get("notes", ""))
    memory_map = tuple(tuple(sorted(r.items())) for r in d.get("memory_map", ()))
    return Board(d["name"], d["description"], d["core"], flash, ram, int(d["stack_bytes"]), int(d["clock_hz"]),
                 d.get("qemu_machine"), d.get("mcu", ""), d.get("reset_clock_hz"), load, memory_map, probe,
                 d.get("notes", ""), str(path))


def board_from_json(d: dict) -> Board:
    """Inverse of :meth:`Board.to_json` (the copy a build keeps in its manifest)."""
    probe = Probe(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["probe"].items()}) \
        if d.get("probe") else None
    return Board(d["name"], d["description"], d["core"], MemoryRegion(**d["flash"]), MemoryRegion(**d["ram"]),
                 d["stack_bytes"], d["clock_hz"], d.get("qemu_machine"), d.get("mcu", ""), d.get("reset_clock_hz"),
                 d.get("load", "flash"), tuple(tuple(sorted(r.items())) for r in d.get("memory_map", ())), probe,
                 d.get("notes", ""), d.get("path", ""))


def get_board(name: str) -> Board:
    """A shipped board by name, or a board TOML file by path (``*.toml``)."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise TargetError(f"{name}: no such board file")
        return board_from_dict(_read_file(path), path.resolve())
    d, path = _read("boards", name)
    return board_from_dict(d, path)


def emulated_boards(core: str) -> list[str]:
    """Shipped boards that QEMU emulates and that carry ``core``."""
    return [b for b in list_boards() if get_board(b).core == core and get_board(b).emulated]


def resolve(target: str, board: str | None) -> tuple[Core, Board]:
    """Check that ``target`` (a core) and ``board`` exist and go together."""
    core = get_core(target)
    if board is None:
        matching = [b for b in list_boards() if get_board(b).core == core.name]
        raise TargetError(f"no --board given; boards with a {core.name}: {', '.join(matching) or 'none'}")
    b = get_board(board)
    if b.core != core.name:
        raise TargetError(f"board '{b.name}' has a {b.core}, not a {core.name}; use --target {b.core}")
    return core, b
