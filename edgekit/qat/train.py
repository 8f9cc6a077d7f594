"""A small training loop with progress output, shared by float and QAT models."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..progress import track


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    """Top-1 accuracy."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.as_tensor(x[i:i + batch]))
            correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.9,
                      temperature: float = 4.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al.; HAWQ-V3 fine-tunes its quantized models with it):
    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, target)``,
    the T^2 keeping the soft term's gradient on the scale of the hard one's."""
    t = temperature
    soft = nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=1),
                                nn.functional.log_softmax(teacher_logits / t, dim=1), reduction="batchmean",
                                log_target=True)
    return alpha * t * t * soft + (1.0 - alpha) * nn.functional.cross_entropy(logits, target)


def train_epoch(model: nn.Module, opt, loss_fn, xt: torch.Tensor, yt: torch.Tensor, order: torch.Tensor,
                batch: int, on_batch=None, teacher_logits: torch.Tensor | None = None) -> tuple[float, float]:
    """One pass over ``order`` in mini-batches; returns (mean loss, train accuracy).
    ``on_batch(b, n_batches, mean loss so far)`` reports progress. With ``teacher_logits``
    (one row per training sample) the loss is ``loss_fn(logits, target, teacher rows)``."""
    model.train()
    total, seen, correct = 0.0, 0, 0
    n_batches = (len(order) + batch - 1) // batch
    for b in range(n_batches):
        idx = order[b * batch:(b + 1) * batch]
        opt.zero_grad()
        logits = model(xt[idx])
        loss = loss_fn(logits, yt[idx]) if teacher_logits is None else loss_fn(logits, yt[idx], teacher_logits[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        correct += int((logits.argmax(1) == yt[idx]).sum())
        if on_batch is not None:
            on_batch(b, n_batches, total / seen)
    return total / max(seen, 1), correct / max(seen, 1)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 10, lr: float = 2e-3,
          batch: int = 64, seed: int = 0, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
          progress: bool = True, label: str = "train", teacher: nn.Module | None = None, distill_alpha: float = 0.9,
          temperature: float = 4.0) -> nn.Module:
    """Adam + cosine schedule; prints one line per epoch (loss, accuracy, time) and, on a terminal, a progress bar over the epochs.
    With ``teacher`` the loss is ``distillation_loss`` against the teacher's logits (computed once,
    in eval mode: the teacher is not trained)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    loss_fn, teacher_logits = nn.CrossEntropyLoss(), None
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            teacher_logits = torch.cat([teacher(xt[i:i + 512]) for i in range(0, len(xt), 512)])

        def loss_fn(logits, target, soft):
            return distillation_loss(logits, soft, target, distill_alpha, temperature)
    t0 = time.monotonic()
    for epoch in track(range(epochs), f"[{label}] epochs") if progress else range(epochs):
        loss, acc = train_epoch(model, opt, loss_fn, xt, yt, torch.as_tensor(rng.permutation(len(x))), batch,
                                teacher_logits=teacher_logits)
        sched.step()
        if progress:
            msg = f"[{label}] epoch {epoch + 1}/{epochs}  loss {loss:.4f}  train acc {acc:.4f}"
            if x_val is not None:
                msg += f"  val acc {evaluate(model, x_val, y_val):.4f}"
            print(msg + f"  ({time.monotonic() - t0:.1f} s)", flush=True)
    model.eval()
    return model
