"""Target registry: cores and boards described in targets/cores/*.toml and targets/boards/*.toml."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from ..errors import TargetError
from ..resources import resource_dir


@dataclass(frozen=True)
class MemoryRegion:
    origin: int
    length: int


@dataclass(frozen=True)
class Core:
    name: str
    arch: str
    description: str
    cflags: tuple[str, ...]
    features: tuple[str, ...] = field(default_factory=tuple)


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


def _names(kind: str) -> list[str]:
    return sorted(p.stem for p in (resource_dir("targets") / kind).glob("*.toml"))


def list_cores() -> list[str]:
    return _names("cores")


def list_boards() -> list[str]:
    return _names("boards")


def _read(kind: str, name: str) -> dict:
    path = resource_dir("targets") / kind / f"{name}.toml"
    if not path.is_file():
        singular = kind[:-1]
        raise TargetError(f"unknown {singular} '{name}'; available: {', '.join(_names(kind))}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML ({e})") from None


def get_core(name: str) -> Core:
    d = _read("cores", name)
    return Core(d["name"], d["arch"], d["description"], tuple(d["cflags"]), tuple(d.get("features", ())))


def get_board(name: str) -> Board:
    d = _read("boards", name)
    return Board(d["name"], d["description"], d["core"], MemoryRegion(**d["flash"]), MemoryRegion(**d["ram"]),
                 d["stack_bytes"], d["clock_hz"], d.get("qemu_machine"))


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
