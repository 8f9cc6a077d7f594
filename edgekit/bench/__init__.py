"""Benchmarks (not tests): ``edgekit bench SUITE``. Each suite module registers a runner in SUITES."""
from __future__ import annotations

from typing import Callable

SUITES: dict[str, Callable] = {}


def suite(name: str):
    def deco(fn):
        SUITES[name] = fn
        return fn
    return deco


def peers_dir():
    """../shared/peers next to the checkout (recorded peer measurements), or None."""
    from pathlib import Path

    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "peers"
        if cand.is_dir():
            return cand
    return None


from . import zoo  # noqa: E402,F401
from . import mlperf  # noqa: E402,F401
