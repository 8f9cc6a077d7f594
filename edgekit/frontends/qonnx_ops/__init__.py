"""QONNX lowerings beyond the core (Quant, Gemm/MatMul, Relu, reshapes): one module per op family.

Every module of this package is imported (discovered) by ``edgekit.frontends.qonnx``; each registers
its functions with ``lowering`` (and its pending-op resolvers with ``resolves``).
"""
