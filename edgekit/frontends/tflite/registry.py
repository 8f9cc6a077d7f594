"""The TFLite lowering registry: TFLite operator name -> lowering function.

Each module in ``ops/`` registers its functions with ``@lowering("OP_NAME", ...)``; the
modules are found with pkgutil, so adding an operator family is adding a module. A
lowering is called as ``fn(lw, op, name, where)``: the ``importer.TfliteLowerer``, the
flatbuffer operator, the IR node name and the operator's description for errors.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

LOWERINGS: dict[str, Callable] = {}


def lowering(*names: str):
    """Register ``fn`` for the TFLite operators ``names``; a name registered twice is refused."""
    def deco(fn):
        for n in names:
            previous = LOWERINGS.get(n)
            if previous is not None and previous is not fn:
                raise RuntimeError(f"TFLite operator {n} has two lowerings: {_where(previous)} and {_where(fn)}")
            LOWERINGS[n] = fn
        return fn
    return deco


def _where(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def load_lowerings() -> dict[str, Callable]:
    """Import every module of ``ops/`` (each registers its lowerings) and return the registry.

    The modules import this one, so ``ops`` is found at run time, not imported at the top:
    the registry does not depend on the lowerings."""
    ops = importlib.import_module(f"{__package__}.ops")
    for module in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{ops.__name__}.{module.name}")
    return LOWERINGS
