"""IR operators, one module per operator; every module of this package is imported (discovered)."""
from ..registry import discover
from .registry import OPS, Op, get_op, register

discover(__name__)

__all__ = ["OPS", "Op", "get_op", "register"]
