"""TFLite Micro's own arena figure for a .tflite file, measured now with the tflite-micro package.

The package's interpreter (x86-64, reference kernels) allocates through TFLM's RecordingMicroAllocator,
which plans the activations with TFLM's greedy memory planner and prints what it allocated:
``print_allocations()`` writes "Arena allocation total/head/tail N bytes" to stderr from C++. The
head is the planned non-persistent part (activations and kernel scratch), the tail the persistent
structures (tensor and node records, the kernels' OpData), whose pointers are 8 bytes here against
4 on a Cortex-M. So the total overstates an M4 build's ``arena_used_bytes`` (the recorded models:
``edgekit bench mlperf-tiny`` prints the factor), and the head alone is a lower bound of it.

It runs in a child process: the figures come from C++ writing to file descriptor 2.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import sys
from tflite_micro.python.tflite_micro import runtime
runtime.Interpreter.from_file(sys.argv[1]).print_allocations()
"""
_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
SOURCE = "TFLite Micro's RecordingMicroAllocator on x86-64 (tflite-micro package, reference kernels), this run"


def tflm_arena(path: Path, timeout: float = 120.0) -> dict | None:
    """{"total", "head", "tail"} bytes of the arena TFLM's interpreter allocated for ``path``, or None
    when the tflite-micro package is missing or reports nothing."""
    try:
        res = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = {k: int(v) for k, v in _LINE.findall(res.stderr + res.stdout)}
    return found if res.returncode == 0 and {"total", "head", "tail"} <= set(found) else None
