"""The data sets the search and the tests offer, on a fresh install: digits (scikit-learn),
BasicMotions (aeon's bundled files), and the message when BasicMotions is missing."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgekit.data import load_digits
from edgekit.errors import DatasetError
from edgekit.nas import datasets


def test_digits_split_is_stratified_and_seeded():
    d = load_digits()
    assert d.x_train.shape[1:] == (8, 8) and d.x_train.dtype == np.float32
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.x_test) == 450
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert set(np.unique(d.y_test)) == set(range(10))  # every class in the test split
    again = load_digits()
    assert np.array_equal(d.x_test, again.x_test) and np.array_equal(d.y_test, again.y_test)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)


def test_nas_offers_digits():
    d = datasets.load("digits")
    assert d.input_shape == (8, 8) and d.n_classes == 10
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon (the nas extra) is not installed")
def test_basicmotions_from_aeon(monkeypatch):
    monkeypatch.delenv("EDGEKIT_BASICMOTIONS", raising=False)
    assert "aeon" in str(datasets.basicmotions_dir())
    d = datasets.load("basicmotions")
    assert d.input_shape == (100, 6) and d.n_classes == 4 and len(d.x_test) == 40


def test_basicmotions_missing_names_the_extra(monkeypatch):
    monkeypatch.delenv("EDGEKIT_BASICMOTIONS", raising=False)
    monkeypatch.setattr(datasets, "basicmotions_dir", lambda: None)
    with pytest.raises(DatasetError, match=r"pip install 'edgekit\[nas\]'"):
        datasets.load("basicmotions")


def test_graph_load_takes_a_str(pow2_build):
    from edgekit.ir.graph import Graph

    assert Graph.load(str(pow2_build)).nodes == Graph.load(pow2_build).nodes
