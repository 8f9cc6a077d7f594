"""Case runners for the fuzz campaign's worker process (imported by name in the spawned worker)."""
from __future__ import annotations

import os
import signal

from edgekit.fuzz.runner import Outcome


def die_by_signal(spec, work, board, kernels, vectors, fpga):
    """What a segmentation fault in a native library does to the process running a case."""
    os.kill(os.getpid(), signal.SIGSEGV)


def report_ok(spec, work, board, kernels, vectors, fpga):
    return Outcome("ok", message=f"seed {spec['seed']} in pid {os.getpid()}")
