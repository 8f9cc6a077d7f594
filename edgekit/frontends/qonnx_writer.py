"""Writes small QONNX graphs with onnx.helper (the QONNX counterpart of ``frontends/tflite/writer.py``):
what Brevitas does not export the way published FINN/qonnx-zoo files are written (float pre-processing
before the first quantizer, BatchNorm as Sub/Div/Mul/Add, BipolarQuant weights and activations, an
annotated input without a quantizer), for the tests and ``edgekit bench binary``.

``GraphBuilder`` collects nodes and initializers; ``save`` writes the model, declaring its custom-op
domain unless told not to (as some published files do not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass
class GraphBuilder:
    width: int
    input_shape: tuple = ()  # (C, H, W) for a feature-map input; default (width,)
    domain: str = QONNX_DOMAIN
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    last: str = "x"
    width_now: int = 0
    count: int = 0

    def __post_init__(self):
        self.width_now = self.width

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value, base: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), domain=domain, **attrs))
        return out

    def quant(self, src: str, scale, bits: int, signed: bool = True, narrow: bool = False) -> str:
        return self.node("Quant", [src, self.const(scale), self.const(0.0), self.const(float(bits))],
                         domain=self.domain, signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    def bipolar(self, src: str, scale=1.0) -> str:
        return self.node("BipolarQuant", [src, self.const(scale)], domain=self.domain)

    def arith(self, op: str, value) -> "GraphBuilder":
        self.last = self.node(op, [self.last, self.const(value)])
        return self

    def q(self, scale, bits: int, signed: bool = True, narrow: bool = False) -> "GraphBuilder":
        """Quant the current tensor."""
        self.last = self.quant(self.last, scale, bits, signed, narrow)
        return self

    def sign(self, scale=1.0) -> "GraphBuilder":
        """BipolarQuant the current tensor."""
        self.last = self.bipolar(self.last, scale)
        return self

    def dense(self, weights: np.ndarray, scale, bits: int | None = None, narrow: bool = True) -> "GraphBuilder":
        """MatMul by weights [in, out], quantized by a Quant of ``bits`` (None: a BipolarQuant)."""
        w = self.const(weights, "w")
        wq = self.bipolar(w, scale) if bits is None else self.quant(w, scale, bits, True, narrow)
        self.last = self.node("MatMul", [self.last, wq])
        self.width_now = weights.shape[1]
        return self

    def conv(self, weights: np.ndarray, scale, bits: int | None = None, narrow: bool = True) -> "GraphBuilder":
        """Conv (no padding, stride 1) by weights [out, in, k, k], quantized like ``dense``."""
        w = self.const(weights, "w")
        wq = self.bipolar(w, scale) if bits is None else self.quant(w, scale, bits, True, narrow)
        self.last = self.node("Conv", [self.last, wq], kernel_shape=list(weights.shape[2:]))
        return self

    def flatten(self, width: int) -> "GraphBuilder":
        self.last = self.node("Flatten", [self.last], axis=1)
        self.width_now = width
        return self

    def batchnorm(self, gamma, beta, mean, var) -> "GraphBuilder":
        """BatchNormalization (inference) of the current tensor."""
        params = [self.const(p, "bn") for p in (gamma, beta, mean, var)]
        self.last = self.node("BatchNormalization", [self.last, *params], epsilon=1e-5)
        return self

    def multithreshold(self, thresholds, out_dtype: str, out_scale: float = 1.0,
                       out_bias: float = 0.0) -> "GraphBuilder":
        """FINN's MultiThreshold of the current tensor (thresholds [C, steps])."""
        self.last = self.node("MultiThreshold", [self.last, self.const(thresholds, "thr")], domain=self.domain,
                              out_dtype=out_dtype, out_scale=out_scale, out_bias=out_bias)
        return self

    def relu(self) -> "GraphBuilder":
        self.last = self.node("Relu", [self.last])
        return self

    def save(self, path: Path, annotation: str = "", declare_domain: bool = True) -> Path:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info(
                                      "x", TensorProto.FLOAT, [1, *(self.input_shape or (self.width,))])],
                                  [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, [1, self.width_now])],
                                  self.inits)
        opsets = [helper.make_opsetid("", 13)]
        if declare_domain:
            opsets.append(helper.make_opsetid(self.domain, 1))
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        if annotation:
            a = model.graph.quantization_annotation.add()
            a.tensor_name = "x"
            entry = a.quant_parameter_tensor_names.add()
            entry.key, entry.value = "finn_datatype", annotation
        onnx.save(model, str(path))
        return path
