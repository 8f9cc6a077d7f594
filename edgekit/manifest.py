"""The build manifest (``manifest.json``): what a build directory holds, for every command.

One dataclass, written by the backend that made the build and read by every command
(verify, report, export, profile, flash, the benchmarks and the architecture search).
The JSON keys are the field names, in this order; fields a backend does not use stay
``None`` and are not written, so a Cortex-M manifest and an FPGA manifest each carry
only their own keys. Build directories written before the ``backend`` key existed are
Cortex-M builds.
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .errors import BuildDirError

MANIFEST_FILE = "manifest.json"


@dataclass
class Manifest:
    # --- every backend ---
    edgekit_version: str
    created: str
    source: str
    source_sha256: str
    target: str  # a Cortex-M core, or "fpga"
    board: str
    input: dict  # tensor, float_shape, dtype
    output: dict  # tensor, shape, dtype
    macs: int
    build_seconds: float
    backend: str = "cortexm"  # which edgekit.backends implementation made (and reads) the build
    frontend: str | None = None  # "qonnx" or "tflite" (Cortex-M builds)
    # --- Cortex-M (edgekit.backends.cortexm) ---
    qemu_machine: str | None = None
    firmware: str | None = None  # firmware.elf, relative to the build directory
    host_runner: str | None = None
    weight_bytes: int | None = None
    arena_bytes: int | None = None
    sections: dict | None = None
    memory: dict | None = None  # flash/RAM totals (toolchain.memory_usage) + inference_stack_static_bytes
    memory_breakdown: dict | None = None
    fit: dict | None = None
    board_description: dict | None = None
    kernels: str | None = None
    optimize: str | None = None  # --optimize (size, balanced, speed) of an optimized-kernel build; None: reference
    layers: list | None = None  # the per-layer report rows
    kernel_variants: dict | None = None  # node name -> the kernel variant codegen chose (backends/cortexm/kernels)
    kernel_fallbacks: list | None = None  # layers on a slower kernel than theirs: layer, kernel, reason
    memory_plan: dict | None = None
    io_buffers: str | None = None  # model input/output: "arena" (inside it) or "caller"; builds before the option: caller
    profile: dict | None = None  # written by `edgekit profile`
    # --- FPGA (edgekit.backends.hls) ---
    part: str | None = None
    hls: dict | None = None
    layout: dict | None = None
    precision: dict | None = None
    hls_types: dict | None = None
    bops: int | None = None
    estimates: str | None = None  # estimates.json, relative to the build directory
    fits: bool | None = None
    # keys this version does not know (a newer edgekit's), kept so that a rewrite keeps them
    unknown: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unknown"}
        d = {k: v for k, v in d.items() if v is not None}
        if self.backend == "cortexm":  # the key older builds lack; Cortex-M is the default
            del d["backend"]
        return dict(d, **self.unknown)

    @classmethod
    def from_json(cls, data: dict, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise BuildDirError(f"{where}: unreadable manifest (not a JSON object); rebuild")
        known = {f.name for f in fields(cls)} - {"unknown"}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise BuildDirError(f"{where}: unreadable manifest (no {', '.join(missing)}); rebuild")
        return cls(**{k: v for k, v in data.items() if k in known},
                   unknown={k: v for k, v in data.items() if k not in known})

    def save(self, build_dir: str | Path) -> Path:
        """Write ``manifest.json`` atomically (a reader never sees half a file)."""
        path = Path(build_dir) / MANIFEST_FILE
        tmp = path.with_name(f".{MANIFEST_FILE}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)
        return path


def load_manifest(build_dir: str | Path) -> Manifest:
    """The manifest of a build directory; BuildDirError (one line) if there is none or it is unreadable."""
    path = Path(build_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BuildDirError(f"{build_dir}: not an edgekit build directory (no {MANIFEST_FILE}); "
                            "run `edgekit build` first")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BuildDirError(f"{path}: unreadable manifest ({e}); rebuild") from None
    return Manifest.from_json(data, str(path))
