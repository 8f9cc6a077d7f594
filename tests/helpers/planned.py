"""A .tflite model's graph as the build sees it before kernel selection: imported, the default passes run, and
its memory plan (for the kernel tests that check selections, gaps and row fusions without a build)."""
from __future__ import annotations

from pathlib import Path


def planned_graph(model: bytes, tmp_path: Path, name: str = "m.tflite"):
    """(graph, plan) of the model bytes ``model``, written to ``tmp_path / name`` for the importer."""
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    path = tmp_path / name
    path.write_bytes(model)
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    return graph, plan_memory(graph)
