"""Data sets for training and evaluating edge models."""

from edgekit.data.har import HarDataset, load_har

__all__ = ["HarDataset", "load_har"]
