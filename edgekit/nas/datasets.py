"""Data sets for the search: train / validation / test windows ``(N, T, C)``.

* ``har``: UCI-HAR-style windows cut from the UCI HAPT recordings
  (:func:`edgekit.data.load_har`): 128 samples x 6 channels (body+gravity acceleration
  and gyroscope), 6 activities. Test = the 9 subjects of UCI-HAR's official test split;
  validation (early stopping and the search objective) = 3 of the 21 training subjects,
  so the test subjects are never seen during the search.
* ``basicmotions``: the UEA BasicMotions set (accelerometer + gyroscope, 100 samples x
  6 channels, 4 activities, 40 train / 40 test series). Read from the copy that aeon
  (in the ``nas`` extra) or sktime ships, without importing either package (or from
  ``$EDGEKIT_BASICMOTIONS``, a folder with the two ``.ts`` files); validation =
  a stratified quarter of the training series. Standardized per channel with training
  statistics.
* ``digits``: scikit-learn's 8x8 handwritten digits (:func:`edgekit.data.load_digits`),
  10 classes, as 8 rows x 8 columns (T x C: the search's 2D blocks see the image); test =
  a stratified quarter, validation = a stratified fifth of the rest.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

DATASETS = ("har", "basicmotions", "digits")


@dataclass(frozen=True, eq=False)
class NasData:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def chance(self) -> dict:
        """The majority-class baseline (what a model that always answers the most frequent
        class scores) on validation and test, and the validation accuracy a returned model
        needs: chance + max(5 points, 3 standard errors of a chance-level accuracy on this
        many validation samples). Below it, a validation score is not evidence of learning."""
        return chance_levels(self.y_val, self.y_test, self.n_classes)

    def chance_text(self) -> str:
        c = self.chance()
        return (f"chance (majority class) {c['val']:.3f} on validation, {c['test']:.3f} on test; a returned model "
                f"needs validation accuracy >= {c['threshold']:.3f}")


MIN_MARGIN = 0.05   # points above chance, whatever the validation set's size
MARGIN_SE = 3.0     # standard errors of a chance-level accuracy on the validation set


def majority_share(y: np.ndarray, n_classes: int) -> float:
    return float(np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).max() / max(1, len(y)))


def chance_levels(y_val: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict:
    """See ``NasData.chance``. The standard error is that of a binomial proportion at the
    chance level: sqrt(p (1 - p) / n_val)."""
    p = majority_share(y_val, n_classes)
    se = math.sqrt(p * (1 - p) / max(1, len(y_val)))
    margin = max(MIN_MARGIN, MARGIN_SE * se)
    return {"val": p, "test": majority_share(y_test, n_classes), "n_val": int(len(y_val)),
            "standard_error": se, "margin": margin, "threshold": p + margin}


def load(name: str, train_subset: int | None = None, seed: int = 0) -> NasData:
    """Load a data set by name; ``train_subset`` keeps that many random training windows."""
    if name == "har":
        d = _har()
    elif name == "basicmotions":
        d = _basicmotions()
    elif name == "digits":
        d = _digits()
    else:
        raise DatasetError(f"unknown data set '{name}'; available: {', '.join(DATASETS)}")
    if train_subset and train_subset < len(d.x_train):
        idx = np.sort(np.random.default_rng(seed).permutation(len(d.x_train))[:train_subset])
        d = NasData(d.name, d.x_train[idx], d.y_train[idx], d.x_val, d.y_val, d.x_test, d.y_test, d.class_names,
                    d.description + f"; training subset of {train_subset} windows (seed {seed})")
    return NasData(d.name, d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test, d.class_names,
                   d.description + "; " + d.chance_text())


HAR_VAL_SUBJECTS = (7, 19, 28)


def _har() -> NasData:
    from ..data import load_har

    h = load_har()
    val = np.isin(h.s_train, HAR_VAL_SUBJECTS)
    return NasData("har", h.x_train[~val], h.y_train[~val], h.x_train[val], h.y_train[val], h.x_test, h.y_test,
                   h.class_names,
                   f"HAR windows (UCI HAPT, 128x6, 50 Hz): train {int((~val).sum())} windows (18 subjects), "
                   f"validation {int(val.sum())} (subjects {', '.join(map(str, HAR_VAL_SUBJECTS))}), test "
                   f"{len(h.x_test)} (UCI-HAR test subjects {', '.join(map(str, sorted(set(h.s_test.tolist()))))})")


def _digits() -> NasData:
    from sklearn.model_selection import train_test_split

    from ..data import load_digits

    d = load_digits()
    x_tr, x_val, y_tr, y_val = train_test_split(d.x_train, d.y_train, test_size=0.2, random_state=0,
                                                stratify=d.y_train)
    return NasData("digits", x_tr, y_tr, x_val, y_val, d.x_test, d.y_test, d.class_names,
                   f"digits (scikit-learn, 8x8 images, pixels scaled to [0, 1]): train {len(x_tr)}, "
                   f"validation {len(x_val)}, test {len(d.x_test)} images")


# ---------------------------------------------------------------------------------------
# BasicMotions (.ts files shipped inside sktime / aeon)
# ---------------------------------------------------------------------------------------
_TS_LOCATIONS = (("aeon", ("datasets", "data", "BasicMotions")), ("sktime", ("datasets", "data", "BasicMotions")))


def basicmotions_dir() -> Path | None:
    """``$EDGEKIT_BASICMOTIONS`` (a folder with BasicMotions_TRAIN.ts / _TEST.ts), else the copy
    inside an installed aeon or sktime (found without importing them)."""
    env = os.environ.get("EDGEKIT_BASICMOTIONS")
    if env and (Path(env) / "BasicMotions_TRAIN.ts").is_file():
        return Path(env)
    for module, parts in _TS_LOCATIONS:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        d = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
        if (d / "BasicMotions_TRAIN.ts").is_file():
            return d
    return None


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A sktime/UEA ``.ts`` file of equal-length multivariate series: (x [N, T, C], labels)."""
    xs, ys = [], []
    in_data = False
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower() == "@data":
                in_data = True
            continue
        *dims, label = line.split(":")
        xs.append(np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float32).T)
        ys.append(label.strip())
    if not xs:
        raise DatasetError(f"{path}: no series")
    return np.stack(xs), np.array(ys)


def _basicmotions() -> NasData:
    d = basicmotions_dir()
    if d is None:
        raise DatasetError("the BasicMotions data set ships with aeon, in edgekit's nas extra: "
                           "pip install 'edgekit[nas]' (or set EDGEKIT_BASICMOTIONS to a folder with "
                           "BasicMotions_TRAIN.ts and BasicMotions_TEST.ts)")
    x_tr, l_tr = read_ts(d / "BasicMotions_TRAIN.ts")
    x_te, l_te = read_ts(d / "BasicMotions_TEST.ts")
    classes = tuple(sorted(set(l_tr.tolist())))
    y_tr = np.array([classes.index(v) for v in l_tr], dtype=np.int64)
    y_te = np.array([classes.index(v) for v in l_te], dtype=np.int64)
    rng = np.random.default_rng(0)
    val = np.zeros(len(y_tr), bool)
    for c in range(len(classes)):  # stratified quarter for validation
        idx = rng.permutation(np.flatnonzero(y_tr == c))
        val[idx[:max(1, len(idx) // 4)]] = True
    flat = x_tr[~val].reshape(-1, x_tr.shape[2]).astype(np.float64)
    mean, std = flat.mean(0).astype(np.float32), flat.std(0).astype(np.float32) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return NasData("basicmotions", x_tr[~val], y_tr[~val], x_tr[val], y_tr[val], x_te, y_te, classes,
                   f"BasicMotions (UEA, {x_tr.shape[1]}x{x_tr.shape[2]}, from {d}): train {int((~val).sum())}, "
                   f"validation {int(val.sum())}, test {len(y_te)} series")
