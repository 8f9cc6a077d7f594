"""Data sets for training and evaluating edge models."""

from edgekit.data.digits import DigitsDataset, load_digits
from edgekit.data.har import HarDataset, load_har

__all__ = ["DigitsDataset", "HarDataset", "load_digits", "load_har"]
