"""IR operators. Importing this package registers every operator module."""
from . import dense, relu, requantize, reshape  # noqa: F401  (registration side effects)
from .registry import OPS, Op, get_op, register

__all__ = ["OPS", "Op", "get_op", "register"]
