"""One calibration loop for every Brevitas test model."""
from __future__ import annotations

import torch
from torch import nn


def calibrate(model: nn.Module, shape: tuple, passes: int = 4, batch: int = 16, spread: float = 2.0) -> nn.Module:
    """A few training-mode passes on random data (``batch`` normal samples times ``spread``) so
    the activation quantizers get their scales; the model comes back in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randn(batch, *shape) * spread)
    return model.eval()
