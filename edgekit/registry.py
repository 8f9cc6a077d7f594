"""Name-keyed registries that refuse a second registration, and module discovery.

Operators (``edgekit.ops``), QONNX lowerings (``edgekit.frontends.qonnx_ops``) and the
pending-float-op resolvers register themselves when their module is imported; the
packages are imported by :func:`discover`, so adding a module needs no import list.
A key registered twice is a bug (one registration would silently replace the other),
so :meth:`Registry.add` refuses it and names both places.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from .errors import RegistryError

V = TypeVar("V")


def place(obj) -> str:
    """Where an object is defined, as ``module:qualname``."""
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{target.__module__}:{target.__qualname__}"


class Registry(Mapping, Generic[V]):
    """A read-only mapping filled by :meth:`add`, which refuses a key that is already taken."""

    def __init__(self, what: str):
        self.what = what  # e.g. "IR operator", for the error message
        self._items: dict[str, V] = {}
        self._places: dict[str, str] = {}

    def add(self, key: str, value: V, where: str | None = None) -> None:
        self.add_all([key], value, where)

    def add_all(self, keys, value: V, where: str | None = None) -> None:
        """Register ``value`` under every key, or under none if one is taken."""
        where = where or place(value)
        for key in keys:
            if key in self._items:
                raise RegistryError(f"{self.what} '{key}' is registered twice: first by {self._places[key]}, "
                                    f"again by {where}")
        for key in keys:
            self._items[key] = value
            self._places[key] = where

    def place_of(self, key: str) -> str:
        return self._places[key]

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def discover(package: str) -> list[str]:
    """Import every module of ``package`` (registering what they define); returns their names.

    Modules whose names start with ``_`` are helpers imported by the others, not discovered."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
