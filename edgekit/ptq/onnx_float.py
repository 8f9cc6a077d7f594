"""A float ONNX model as a torch.fx module, so that Brevitas' PTQ can quantize it.

The maintained converter (onnx2torch) pulls torchvision and a CUDA build of torch, so edgekit
maps the operators it compiles itself, one torch module per ONNX node, after qonnx's cleanup
(shape inference and constant folding, which turns the Shape/Gather/Concat arithmetic of a
flatten into a constant). Anything else is refused naming the node.
"""
from __future__ import annotations

import operator
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from ..errors import ModelError, UnsupportedOpError

SUPPORTED = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Flatten", "Reshape", "BatchNormalization", "Sigmoid", "Tanh", "Identity", "Dropout")


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _tensor(arr) -> torch.Tensor:
    """A float32 copy (initializers from onnx are read-only arrays)."""
    return torch.from_numpy(np.array(arr, dtype=np.float32))


def _name(node, i: int) -> str:
    """The node's name in the user's file (kept through qonnx's renaming cleanup in doc_string)."""
    from ..frontends.qonnx_lowering import ORIGINAL_NAME_TAG

    if node.doc_string.startswith(ORIGINAL_NAME_TAG):
        return node.doc_string[len(ORIGINAL_NAME_TAG):]
    return node.name or f"{node.op_type}#{i}"


def load_float_onnx(path: Path):
    """Read, check and clean a float ONNX file (batch 1); returns qonnx's ModelWrapper."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from ..frontends.qonnx import QUANTIZER_OPS, fix_symbolic_batch
    from ..frontends.qonnx_lowering import ORIGINAL_NAME_TAG
    from ..frontends.qonnx_qdq import QDQ_OPS, QOPERATOR_OPS
    from ..frontends.qonnx_validate import check_proto, read_model

    proto = read_model(path)
    if not proto.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (no graph nodes); the file may be truncated or "
                         "not ONNX at all")
    quantized = next((n for n in proto.graph.node if n.op_type in QUANTIZER_OPS + QDQ_OPS + QOPERATOR_OPS), None)
    if quantized is not None:
        raise ModelError(f"{path}: already quantized (node '{quantized.name}' is {quantized.op_type}); build it "
                         "with `edgekit build` instead of quantizing it again")
    check_proto(proto, str(path))
    fix_symbolic_batch(proto)
    for i, node in enumerate(proto.graph.node):
        node.doc_string = ORIGINAL_NAME_TAG + (node.name or f"{node.op_type}#{i}")
    try:
        return cleanup_model(ModelWrapper(proto))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelError(f"{path}: qonnx could not clean up the graph ({type(e).__name__}: {first})") from None


class _Converter:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[str, fx.Node] = {}
        self.consumers: dict[str, int] = {}
        for n in model.graph.node:
            for t in n.input:
                self.consumers[t] = self.consumers.get(t, 0) + 1

    def refuse(self, node, i: int, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.source}: node '{_name(node, i)}' ({node.op_type}): {why}")

    def const(self, name: str):
        v = self.model.get_initializer(name)
        return None if v is None else np.asarray(v)

    def module(self, node, i: int, mod: nn.Module, arg: fx.Node) -> fx.Node:
        key = f"m{i}_{node.op_type.lower()}"
        self.root.add_module(key, mod)
        return self.graph.call_module(key, (arg,))

    def input_of(self, node, i: int, k: int = 0) -> fx.Node:
        v = self.env.get(node.input[k])
        if v is None:
            raise self.refuse(node, i, f"input '{node.input[k]}' is a constant where edgekit expects a feature map")
        return v

    def convert(self) -> fx.GraphModule:
        inp = self.model.graph.input[0].name
        self.env[inp] = self.graph.placeholder("x")
        skip: set[int] = set()
        nodes = list(self.model.graph.node)
        for i, node in enumerate(nodes):
            if i in skip:
                continue
            if node.op_type not in SUPPORTED:
                raise self.refuse(node, i, f"not supported for quantization; supported: {', '.join(SUPPORTED)}")
            out = getattr(self, "op_" + node.op_type)(node, i, nodes, skip)
            self.env[node.output[0]] = out
        outputs = [self.env[o.name] for o in self.model.graph.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        gm = fx.GraphModule(self.root, self.graph)
        return gm.eval()

    # -- operators -------------------------------------------------------------------
    def op_Conv(self, node, i, nodes, skip):
        a = _attrs(node)
        w = self.const(node.input[1])
        if w is None:
            raise self.refuse(node, i, "weights must be a constant")
        b = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        dims = w.ndim - 2
        if dims not in (1, 2):
            raise self.refuse(node, i, f"{dims}D convolution; edgekit compiles 1D and 2D")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.refuse(node, i, "auto_pad SAME_*; export with explicit pads")
        pads = list(a.get("pads", [0] * 2 * dims))
        if pads[:dims] != pads[dims:]:
            raise self.refuse(node, i, f"asymmetric pads {pads}; edgekit quantizes symmetric padding")
        group = int(a.get("group", 1))
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        conv = cls(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1] * dims)),
                   padding=tuple(pads[:dims]), dilation=tuple(a.get("dilations", [1] * dims)), groups=group,
                   bias=b is not None)
        with torch.no_grad():
            conv.weight.copy_(_tensor(w))
            if b is not None:
                conv.bias.copy_(_tensor(b))
        return self.module(node, i, conv, self.input_of(node, i))

    def _linear(self, node, i, weight_out_in: np.ndarray, bias) -> fx.Node:
        lin = nn.Linear(weight_out_in.shape[1], weight_out_in.shape[0], bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(_tensor(weight_out_in))
            if bias is not None:
                lin.bias.copy_(_tensor(np.broadcast_to(bias, (weight_out_in.shape[0],))))
        return self.module(node, i, lin, self.input_of(node, i))

    def op_Gemm(self, node, i, nodes, skip):
        a = _attrs(node)
        w = self.const(node.input[1])
        if w is None or a.get("transA", 0):
            raise self.refuse(node, i, "needs constant weights (input B) and transA=0")
        w = w if a.get("transB", 0) else w.T
        b = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        w = w * float(a.get("alpha", 1.0))
        b = None if b is None else b * float(a.get("beta", 1.0))
        return self._linear(node, i, w, b)

    def op_MatMul(self, node, i, nodes, skip):
        w = self.const(node.input[1])
        if w is None or w.ndim != 2:
            raise self.refuse(node, i, "needs a constant 2D weight matrix as its second input")
        bias = None
        # MatMul + Add(constant) is a Linear layer with a bias (torch.onnx exports nn.Linear this way
        # for inputs of rank > 2)
        nxt = next(((k, n) for k, n in enumerate(nodes) if n.op_type == "Add" and node.output[0] in n.input), None)
        if nxt is not None and self.consumers.get(node.output[0]) == 1:
            other = [t for t in nxt[1].input if t != node.output[0]]
            b = self.const(other[0]) if other else None
            if b is not None and b.size == w.shape[1]:
                bias = b.reshape(-1)
                skip.add(nxt[0])
        out = self._linear(node, i, w.T, bias)
        if bias is not None:
            self.env[nxt[1].output[0]] = out
        return out

    def op_Add(self, node, i, nodes, skip):
        if any(self.const(t) is not None for t in node.input):
            raise self.refuse(node, i, "adds a constant to a feature map; only residual adds of two feature maps "
                              "and the bias after a MatMul are supported")
        return self.graph.call_function(operator.add, (self.input_of(node, i, 0), self.input_of(node, i, 1)))

    def op_Relu(self, node, i, nodes, skip):
        return self.module(node, i, nn.ReLU(), self.input_of(node, i))

    def op_Clip(self, node, i, nodes, skip):
        a = _attrs(node)
        lo = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
        hi = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
        lo = None if lo is None else float(np.asarray(lo))
        hi = None if hi is None else float(np.asarray(hi))
        if lo == 0.0 and hi == 6.0:
            return self.module(node, i, nn.ReLU6(), self.input_of(node, i))
        if lo == 0.0 and hi is None:
            return self.module(node, i, nn.ReLU(), self.input_of(node, i))
        raise self.refuse(node, i, f"Clip({lo}, {hi}); only ReLU (0, inf) and ReLU6 (0, 6) are quantized")

    def _pool(self, node, i, average: bool):
        a = _attrs(node)
        kernel = tuple(a["kernel_shape"])
        dims = len(kernel)
        if dims not in (1, 2):
            raise self.refuse(node, i, f"{dims}D pooling")
        pads = list(a.get("pads", [0] * 2 * dims))
        if pads[:dims] != pads[dims:]:
            raise self.refuse(node, i, f"asymmetric pads {pads}")
        kw = dict(kernel_size=kernel, stride=tuple(a.get("strides", kernel)), padding=tuple(pads[:dims]),
                  ceil_mode=bool(a.get("ceil_mode", 0)))
        if average:
            mod = (nn.AvgPool1d if dims == 1 else nn.AvgPool2d)(count_include_pad=bool(a.get("count_include_pad", 0)),
                                                                **kw)
        else:
            if any(d != 1 for d in a.get("dilations", [1] * dims)):
                raise self.refuse(node, i, "dilated max pooling")
            mod = (nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(**kw)
        return self.module(node, i, mod, self.input_of(node, i))

    def op_MaxPool(self, node, i, nodes, skip):
        return self._pool(node, i, average=False)

    def op_AveragePool(self, node, i, nodes, skip):
        return self._pool(node, i, average=True)

    def op_GlobalAveragePool(self, node, i, nodes, skip):
        rank = len(self.model.get_tensor_shape(node.input[0]))
        mod = nn.AdaptiveAvgPool1d(1) if rank == 3 else nn.AdaptiveAvgPool2d(1)
        return self.module(node, i, mod, self.input_of(node, i))

    def op_Flatten(self, node, i, nodes, skip):
        if int(_attrs(node).get("axis", 1)) != 1:
            raise self.refuse(node, i, "Flatten with axis other than 1")
        return self.module(node, i, nn.Flatten(), self.input_of(node, i))

    def op_Reshape(self, node, i, nodes, skip):
        shape = self.model.get_tensor_shape(node.output[0])
        if shape is None or any(d is None or d <= 0 for d in shape):
            raise self.refuse(node, i, "the output shape is not known after shape inference")
        # the inferred per-sample shape, for any batch size
        return self.graph.call_method("reshape", (self.input_of(node, i), (-1, *shape[1:])))

    def op_BatchNormalization(self, node, i, nodes, skip):
        scale, bias, mean, var = (self.const(t) for t in node.input[1:5])
        if any(v is None for v in (scale, bias, mean, var)):
            raise self.refuse(node, i, "needs constant scale, bias, mean and variance")
        rank = len(self.model.get_tensor_shape(node.input[0]))
        bn = (nn.BatchNorm1d if rank == 3 else nn.BatchNorm2d)(scale.size, eps=float(_attrs(node).get("epsilon", 1e-5)))
        with torch.no_grad():
            bn.weight.copy_(_tensor(scale))
            bn.bias.copy_(_tensor(bias))
            bn.running_mean.copy_(_tensor(mean))
            bn.running_var.copy_(_tensor(var))
        return self.module(node, i, bn.eval(), self.input_of(node, i))

    def op_Sigmoid(self, node, i, nodes, skip):
        return self.module(node, i, nn.Sigmoid(), self.input_of(node, i))

    def op_Tanh(self, node, i, nodes, skip):
        return self.module(node, i, nn.Tanh(), self.input_of(node, i))

    def op_Identity(self, node, i, nodes, skip):
        return self.input_of(node, i)

    op_Dropout = op_Identity


def onnx_to_torch(path: Path) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """The float ONNX model as a torch module, and its per-sample input shape."""
    model = load_float_onnx(path)
    if len(model.graph.output) != 1:
        raise UnsupportedOpError(f"{path}: {len(model.graph.output)} graph outputs; edgekit compiles models with one")
    shape = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name)[1:])
    return _Converter(model, str(path)).convert(), shape


def check_conversion(path: Path, module: fx.GraphModule, x: np.ndarray) -> float:
    """Largest |difference| between onnxruntime's execution of the float file and the converted
    module on a few calibration samples, relative to the output's range; refuses a conversion
    that does not compute the same function."""
    import onnxruntime as ort

    from ..frontends.qonnx_validate import read_model

    proto = read_model(path)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    want = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(min(len(x), 8))])
    with torch.no_grad():
        got = module(torch.as_tensor(x[:len(want)])).numpy().reshape(want.shape)
    err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-6))
    if not err < 1e-4:
        raise ModelError(f"{path}: edgekit's translation of the float graph to PyTorch computes something else "
                         f"than onnxruntime (relative difference {err:.2g}); please report this model")
    return err
