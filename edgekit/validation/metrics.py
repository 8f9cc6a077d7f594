"""What validate reports: top-1 accuracy, per-class accuracy and the confusion matrix of a
classifier; RMSE, largest error and cosine similarity of a regressor. Pure numpy, whole arrays
at once."""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class: (n_classes, n_classes) int64."""
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict:
    """Top-1 accuracy (a share, 0..1), per-class accuracy and the confusion matrix."""
    cm = confusion_matrix(labels, predicted, n_classes)
    samples = cm.sum(axis=1)
    per_class = [{"class": c, "samples": int(samples[c]), "correct": int(cm[c, c]),
                  "accuracy": float(cm[c, c] / samples[c]) if samples[c] else None} for c in range(n_classes)]
    return {"accuracy": float(np.trace(cm) / max(1, len(labels))), "correct": int(np.trace(cm)),
            "per_class": per_class, "confusion_matrix": cm.tolist()}


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine similarity of two arrays taken as one vector each (as STM32Cube.AI's validate reports
    it); None when either is all zeros."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else None


def regression(outputs: np.ndarray, targets: np.ndarray) -> dict:
    """Errors of (N, K) outputs against targets of the same shape."""
    err = np.asarray(outputs, np.float64) - np.asarray(targets, np.float64)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0,
            "mae": float(np.mean(np.abs(err))) if err.size else 0.0,
            "max_error": float(np.max(np.abs(err))) if err.size else 0.0,
            "cosine": cosine(outputs, targets)}
