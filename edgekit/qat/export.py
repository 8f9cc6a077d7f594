"""Export a Brevitas model to QONNX (one self-contained file, TorchScript exporter)."""
from __future__ import annotations

from pathlib import Path

import torch


def export_qonnx(model: torch.nn.Module, example_input: torch.Tensor, path: str | Path) -> Path:
    """Write ``path`` and return it. Batch size 1; the input layout is the example's."""
    import warnings

    with warnings.catch_warnings():
        # brevitas.graph.equalize warns on import that an optional CUDA package is missing; edgekit
        # never uses it (CPU export), and the warning tears progress lines.
        warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found", category=UserWarning)
        from brevitas.export import export_qonnx as _export

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    # dynamo=False: the TorchScript path is ~20x faster and keeps the weights inside the file.
    _export(model, input_t=example_input[:1].float(), export_path=str(path), dynamo=False)
    return path
