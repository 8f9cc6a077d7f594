"""IR operators. Importing this package registers every operator module."""
from . import add, concat, conv2d, dense, lut, pool, relu, requantize, reshape, softmax, softmax_tflite  # noqa: F401
from .registry import OPS, Op, get_op, register

__all__ = ["OPS", "Op", "get_op", "register"]
