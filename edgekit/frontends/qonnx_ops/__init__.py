"""QONNX lowerings beyond the core (Quant, Gemm/MatMul, bias Add, Relu, reshapes): one module per op family.

Each module registers its functions with ``edgekit.frontends.qonnx.lowering``.
"""
from . import batchnorm, clip, concat, conv, eltwise_add, lut, pool, softmax  # noqa: F401
