"""Benchmarks (not tests): ``edgekit bench SUITE``. Each suite module registers a runner in SUITES
(``bench/suites.py``); the modules of this package are discovered, not listed."""
from __future__ import annotations

from ..registry import discover
from .suites import SUITES, peers_dir, suite

discover(__name__)

__all__ = ["SUITES", "peers_dir", "suite"]
