"""Backends: each turns the integer IR into something that runs (edgekit.backends.base.Backend).

``cortexm``: C firmware for Cortex-M cores; ``hls``: an hls4ml project for FPGAs.
"""
from __future__ import annotations

from .base import Backend


def all_backends() -> list[Backend]:
    """Every backend, the most specific target first (the Cortex-M backend takes any other target)."""
    from .cortexm.backend import CortexmBackend
    from .hls.backend import HlsBackend

    return [HlsBackend(), CortexmBackend()]


def backend_for_target(target: str) -> Backend:
    return next(b for b in all_backends() if b.handles_target(target))


def backend_named(name: str) -> Backend:
    from ..errors import BuildDirError

    for b in all_backends():
        if b.name == name:
            return b
    raise BuildDirError(f"the build was made by backend '{name}', which this edgekit does not have; "
                        f"backends: {', '.join(b.name for b in all_backends())}")
