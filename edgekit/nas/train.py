"""Short QAT training with early stopping for search trials.

``edgekit.qat.train`` runs a fixed number of epochs; a search trial wants to stop as
soon as validation accuracy stops improving, keep the best epoch's weights, and respect
a time limit. Same optimiser (Adam + cosine schedule over ``max_epochs``) and loss.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..qat.train import train_epoch


@dataclass
class TrainResult:
    best_val: float
    best_epoch: int          # 1-based
    epochs_run: int
    stopped: str             # "patience" | "max_epochs" | "time_limit"
    seconds: float
    history: list = field(default_factory=list)  # per epoch: (loss, train acc, val acc, val loss)


def calibrate_activations(model: nn.Module, x: torch.Tensor, steps: int = 4) -> nn.Module:
    """A few training-mode forward passes (no gradients) so the activation quantizers
    collect statistics and get sensible power-of-two scales before export or training."""
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(x[i * len(x) // steps:(i + 1) * len(x) // steps] if len(x) >= steps else x)
    return model.eval()


LOSS_GAIN = 0.02  # relative drop of the validation loss that counts as progress at equal accuracy


def validation_scores(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) on ``x``, ``y``."""
    model.eval()
    correct, total = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.as_tensor(x[i:i + batch]))
            target = torch.as_tensor(y[i:i + batch]).long()
            correct += int((logits.argmax(1) == target).sum())
            total += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    return correct / len(x), total / len(x)


def train_early_stopping(model: nn.Module, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                         max_epochs: int = 8, patience: int = 2, lr: float = 5e-3, batch: int = 64,
                         seed: int = 0, min_delta: float = 1e-3, time_limit: float | None = None,
                         on_epoch=None) -> TrainResult:
    """Train until validation accuracy has not improved by ``min_delta`` (nor, at equal
    accuracy, the validation loss by ``LOSS_GAIN``) for ``patience`` epochs (or
    ``max_epochs``/``time_limit``); restores the best epoch's weights."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(max_epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    t0 = time.monotonic()
    best, best_loss, best_epoch, best_state, since = -1.0, float("inf"), 0, None, 0
    history = []
    stopped = "max_epochs"
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        loss, acc = train_epoch(model, opt, loss_fn, xt, yt, torch.as_tensor(rng.permutation(len(x))), batch)
        sched.step()
        val, val_loss = validation_scores(model, x_val, y_val)
        history.append((loss, acc, val, val_loss))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
        # On a small validation set accuracy saturates (8 BasicMotions series: 1.0 after a few
        # epochs); an epoch with at least the best accuracy and a clearly lower validation loss
        # is then still progress, and its weights are the better ones to keep.
        if (val > best + min_delta or best_state is None
                or (val >= best and val_loss < best_loss * (1 - LOSS_GAIN))):
            best, best_loss, best_epoch, since = max(val, best), val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
        if since >= patience:
            stopped = "patience"
            break
        if time_limit is not None and time.monotonic() - t0 > time_limit:
            stopped = "time_limit" if epoch < max_epochs else "max_epochs"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(float(best), best_epoch, epoch, stopped, time.monotonic() - t0, history)
