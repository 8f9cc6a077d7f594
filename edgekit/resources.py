"""Locate the data directories (templates/, targets/, firmware/).

In a source checkout they sit beside the package; in an installed wheel they are
shipped inside it as ``edgekit/_data/<name>`` (see pyproject.toml).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def resource_dir(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekit data directory '{name}' is missing from the installation ({_PKG})")
