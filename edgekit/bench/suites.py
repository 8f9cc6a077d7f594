"""The benchmark suites' registry (``edgekit bench SUITE``) and where the recorded peer data is.

Each suite module registers its runner with :func:`suite`; ``edgekit.bench`` discovers the
modules, so a new suite is a new module. A name registered twice is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..registry import Registry

SUITES: Registry[Callable] = Registry("benchmark suite")


def suite(name: str):
    def deco(fn):
        SUITES.add(name, fn)
        return fn
    return deco


def peers_dir() -> Path | None:
    """../shared/peers next to the checkout (recorded peer measurements), or None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "peers"
        if cand.is_dir():
            return cand
    return None
