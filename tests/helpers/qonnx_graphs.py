"""Hand-written QONNX graphs as cases of helpers.opcheck; the graphs are written with
``edgekit.frontends.qonnx_writer.GraphBuilder`` (shared with ``edgekit bench binary``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable



@dataclass(frozen=True)
class GraphCase:
    """A hand-written graph as a case of helpers.opcheck (duck-typed like QonnxCase)."""
    name: str
    make: Callable[[Path], Path]
    exact: bool = True
    kernels: tuple = ("reference", "dsp", "helium")
    why_not: dict = field(default_factory=dict)
    ops: tuple = ()

    def export(self, directory: Path) -> Path:
        return self.make(directory / f"{self.name}.onnx")
