"""Input codes for verification runs."""
from __future__ import annotations

import numpy as np


def input_codes(rng, shape, n: int = 64, center: float = 0, spread: float = 12) -> np.ndarray:
    """``n`` int8 input vectors: half uniform over [-128, 127], half normal around ``center``
    (the input zero point, say) with ``spread``, so both saturated and fine-grained inputs occur."""
    wide = rng.integers(-128, 128, (n // 2,) + tuple(shape))
    narrow = np.clip(np.round(rng.normal(center, spread, (n - n // 2,) + tuple(shape))), -128, 127)
    return np.concatenate([wide, narrow]).astype(np.int64)
