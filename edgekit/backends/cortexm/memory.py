"""Where the firmware's bytes go, and whether they fit the board.

The build compiles every source into its own object (``obj/model.o``, ``obj/harness.o``
...), so the linker map attributes each input section to its source. From the map:

* flash = **code** (model.c's ``.text``: the layer functions and ``ek_model_run``)
  + **weights** (model.c's ``.rodata``: the ``ek_*_weight``/``ek_*_bias`` arrays and any
  requantization tables) + **runtime** (everything else: vector table, startup,
  harness, semihosting, libc/libgcc, strings, the ``.data`` image, alignment padding);
* RAM = **arena** (``ek_arena_words``: the activation arena of the memory plan)
  + **static** (all other ``.data`` and ``.bss``: the harness's I/O buffers, runtime state)
  + **stack** (the reserved ``.stack``; the painted high-water mark is measured by a run).

The three parts of each add up exactly to the totals of ``memory_usage``.
"""
from __future__ import annotations

import re
from pathlib import Path

from ...errors import TargetError
from ...targets import Board
from . import toolchain as tc

MODEL_OBJECT = "model.o"
ARENA_SYMBOL = "ek_arena_words"

_OUT = re.compile(r"^(\.\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)")
_IN_ONE = re.compile(r"^ (\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_IN_NAME = re.compile(r"^ (\.\S+)$")
_IN_REST = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")


def parse_map(map_path: Path) -> list[dict]:
    """Input sections of a GNU ld map: output section, input section, address, size, file."""
    rows, out_sec, pending = [], None, None
    text = Path(map_path).read_text()
    start = text.find("Linker script and memory map")
    for line in text[start:].splitlines():
        m = _OUT.match(line)
        if m:
            out_sec, pending = m.group(1), None
            continue
        if line.startswith(".") and " " not in line.strip():  # output section name alone on its line
            out_sec, pending = line.strip(), None
            continue
        if out_sec is None:
            continue
        if pending is not None:
            m = _IN_REST.match(line)
            if m:
                rows.append({"out": out_sec, "in": pending, "addr": int(m.group(1), 16),
                             "size": int(m.group(2), 16), "file": m.group(3).strip()})
            pending = None
            continue
        m = _IN_ONE.match(line)
        if m and not m.group(1).startswith("0x"):
            rows.append({"out": out_sec, "in": m.group(1), "addr": int(m.group(2), 16),
                         "size": int(m.group(3), 16), "file": m.group(4).strip()})
            continue
        m = _IN_NAME.match(line)
        if m:
            pending = m.group(1)
    return rows


def breakdown(elf: Path, sizes: dict[str, int] | None = None) -> dict:
    """Flash (code, weights, runtime) and RAM (arena, static, stack) of a linked firmware."""
    elf = Path(elf)
    sizes = sizes if sizes is not None else tc.section_sizes(elf)
    usage = tc.memory_usage(sizes)
    rows = parse_map(elf.with_suffix(".map"))
    from_model = [r for r in rows if Path(r["file"]).name == MODEL_OBJECT]
    code = sum(r["size"] for r in from_model if r["out"] == ".text")
    weights = [r for r in from_model if r["out"] == ".rodata"]
    arena = sum(r["size"] for r in from_model if r["out"] == ".bss" and ARENA_SYMBOL in r["in"])
    weight_bytes = sum(r["size"] for r in weights)
    flash = {"total": usage["flash_bytes"], "code": code, "weights": weight_bytes,
             "runtime": usage["flash_bytes"] - code - weight_bytes}
    static = usage["data_bytes"] + usage["bss_bytes"] - arena
    ram = {"total": usage["ram_bytes"], "arena": arena, "static": static, "stack": usage["stack_bytes"]}
    symbols = [{"symbol": r["in"].removeprefix(".rodata."), "bytes": r["size"]} for r in weights]
    return {"flash": flash, "ram": ram, "weight_symbols": symbols}


def io_in_arena(manifest) -> bool:
    """Whether the build keeps its input and output inside the arena (``--io-buffers arena``); builds
    made before the option kept them in the caller's buffers."""
    return (manifest.io_buffers or "caller") == "arena"


def io_buffer_bytes(manifest) -> int:
    """Bytes of the input and output buffers outside the arena: the caller's (``--io-buffers caller``),
    none when they are inside the arena (the arena's size counts them)."""
    if io_in_arena(manifest):
        return 0

    def n(desc):
        shape = desc.get("float_shape") or desc.get("shape")
        count = 1
        for d in shape:
            count *= int(d)
        return count * {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4}[desc["dtype"]]
    return n(manifest.input) + n(manifest.output)


def peak_ram(manifest, measured: dict) -> dict:
    """What one inference needs in RAM: the planned arena (with the input and output in it, by default),
    the caller's input and output buffers outside it (``--io-buffers caller``), and the inference stack (measured on the board when the firmware ran, else the static analysis
    of -fstack-usage). The keys ``edgekit verify --json`` reports under ``memory``."""
    if "inference_stack_bytes" in measured:
        stack, source = measured["inference_stack_bytes"], "measured on the board"
    else:
        stack, source = manifest.memory.get("inference_stack_static_bytes", 0), "static analysis"
    io = io_buffer_bytes(manifest)
    return {"io_buffers": "arena" if io_in_arena(manifest) else "caller", "io_buffer_bytes": io,
            "peak_ram_bytes": manifest.arena_bytes + io + stack, "peak_ram_stack": source}


def describe_peak_ram(memory: dict) -> str:
    """One phrase for the peak RAM of ``peak_ram``'s keys: its total and what it is made of."""
    if memory.get("io_buffers") == "arena":
        io = "input and output inside the arena"
    else:
        io = f"+ the caller's input and output {memory['io_buffer_bytes']:,} B"
    return (f"peak RAM of an inference {memory['peak_ram_bytes']:,} B (arena {memory['arena_bytes']:,} B, {io}, "
            f"+ inference stack, {memory['peak_ram_stack']})")


def _extent(layout: list[dict], origin: int, length: int, key: str, loaded_only: bool) -> int:
    """Bytes from ``origin`` to the end of the last section placed (by ``key`` address) in the region:
    the section sizes plus the alignment padding between them."""
    ends = [s[key] + s["size"] for s in layout
            if (s["loaded"] or not loaded_only) and s["size"] and origin <= s[key] < origin + length]
    return max(ends) - origin if ends else 0


def fit_report(elf: Path, board: Board) -> dict:
    """Every memory region of ``board`` with what the firmware puts in it (the parts add up to
    ``used``, alignment padding included), and by how much it is over (0 when it fits)."""
    elf = Path(elf)
    sizes = tc.section_sizes(elf)
    layout = tc.section_layout(elf)
    b = breakdown(elf, sizes)
    f, r = b["flash"], b["ram"]
    span = tc.OVERSIZE_LENGTH  # an oversized image (measuring link) still starts at the origin
    if board.load == "ram":
        data = tc.memory_usage(sizes)["data_bytes"]  # linked in place: no flash image to copy from
        contents = {"code": f["code"], "weights": f["weights"], "runtime": f["runtime"] - data,
                    "arena": r["arena"], "static": r["static"], "stack": r["stack"]}
        regions = [{"region": "RAM", "origin": board.ram.origin, "size": board.ram.length,
                    "used": _extent(layout, board.ram.origin, span, "vma", False), "contents": contents}]
    else:
        regions = [
            {"region": "flash", "origin": board.flash.origin, "size": board.flash.length,
             "used": _extent(layout, board.flash.origin, span, "lma", True),
             "contents": {"code": f["code"], "weights": f["weights"], "runtime": f["runtime"]}},
            {"region": "RAM", "origin": board.ram.origin, "size": board.ram.length,
             "used": _extent(layout, board.ram.origin, span, "vma", False),
             "contents": {"arena": r["arena"], "static": r["static"], "stack": r["stack"]}},
        ]
    for reg in regions:
        padding = reg["used"] - sum(reg["contents"].values())
        if padding:
            reg["contents"]["padding"] = padding
        reg["over"] = max(0, reg["used"] - reg["size"])
        reg["free"] = max(0, reg["size"] - reg["used"])
    return {"board": board.name, "load": board.load, "fits": all(reg["over"] == 0 for reg in regions),
            "regions": regions}


def format_fit(report: dict) -> str:
    lines = []
    for reg in report["regions"]:
        parts = ", ".join(f"{k} {v:,}" for k, v in reg["contents"].items())
        state = f"OVER by {reg['over']:,} bytes" if reg["over"] else f"fits, {reg['free']:,} bytes free"
        lines.append(f"  {reg['region']:<6}{reg['used']:>12,} of {reg['size']:>12,} bytes: {state} ({parts})")
    return "\n".join(lines)


def raise_if_over(report: dict, board: Board) -> None:
    if report["fits"]:
        return
    over = [f"{reg['region']} by {reg['over']:,} bytes" for reg in report["regions"] if reg["over"]]
    raise TargetError(f"the model does not fit {board.name}: over in {' and '.join(over)}\n"
                      f"{format_fit(report)}\n"
                      "use a smaller model (fewer or narrower layers, 4-bit weights) or a board with more memory")
