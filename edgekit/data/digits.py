"""sklearn's ``digits``: 1,797 handwritten digits as 8x8 grey images (values 0..16), 10 classes.

The images ship inside scikit-learn (a core dependency), so this works offline on a fresh
install. Pixels are scaled to [0, 1]; the split is stratified and seeded, so the same
arguments always give the same windows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = tuple(str(d) for d in range(10))
#: the images' largest pixel value (sklearn's 4x4-block counts of a 32x32 bitmap)
PIXEL_MAX = 16.0


@dataclass(frozen=True, eq=False)
class DigitsDataset:
    x_train: np.ndarray  # float32 [N, 8, 8] in [0, 1]
    y_train: np.ndarray  # int64 [N], the digit
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> DigitsDataset:
    """The digits, split into train and test with every class in both (stratified)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    bunch = sklearn_digits()
    x = (bunch.images / PIXEL_MAX).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                                        stratify=y)
    return DigitsDataset(x_train, y_train, x_test, y_test)
