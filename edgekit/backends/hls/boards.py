"""FPGA boards and parts: ``targets/fpga/*.toml``.

Each description names the part that hls4ml (Vitis/Vivado HLS) synthesises for, the
default clock and the part's resources (LUT, FF, DSP slices, 18 Kb block RAMs, UltraRAM),
which the estimates are checked against.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass

from ...errors import TargetError
from ...resources import resource_dir

RESOURCE_KINDS = ("lut", "ff", "dsp", "bram18", "uram")


@dataclass(frozen=True)
class DspSlice:
    type: str  # DSP48E1 (7-series), DSP48E2 (UltraScale+)
    a_bits: int  # signed multiplier port widths: 25x18 (E1), 27x18 (E2)
    b_bits: int


@dataclass(frozen=True)
class FpgaBoard:
    name: str
    description: str
    part: str
    family: str
    clock_period_ns: float
    dsp: DspSlice
    resources: dict  # RESOURCE_KINDS -> count

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "part": self.part, "family": self.family,
                "clock_period_ns": self.clock_period_ns,
                "dsp": {"type": self.dsp.type, "a_bits": self.dsp.a_bits, "b_bits": self.dsp.b_bits},
                "resources": dict(self.resources)}


def _dir():
    return resource_dir("targets") / "fpga"


def list_fpga_boards() -> list[str]:
    return sorted(p.stem for p in _dir().glob("*.toml"))


def get_fpga_board(name: str | None) -> FpgaBoard:
    boards = list_fpga_boards()
    if name is None:
        raise TargetError(f"no --board given; FPGA boards: {', '.join(boards)}")
    path = _dir() / f"{name}.toml"
    if not path.is_file():
        raise TargetError(f"unknown FPGA board '{name}'; available: {', '.join(boards)}")
    try:
        d = tomllib.loads(path.read_text())
        res = {k: int(d["resources"].get(k, 0)) for k in RESOURCE_KINDS}
        return FpgaBoard(d["name"], d["description"], d["part"], d["family"], float(d["clock_period_ns"]),
                         DspSlice(d["dsp"]["type"], int(d["dsp"]["a_bits"]), int(d["dsp"]["b_bits"])), res)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise TargetError(f"{path}: incomplete FPGA board description ({type(e).__name__}: {e})") from None
