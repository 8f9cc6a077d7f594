"""QONNX front end: load and clean a QONNX file, validate it, lower it to the integer IR.

Lowering walks the cleaned graph in topological order and tracks what each ONNX tensor
is in integer terms: a float graph input not yet quantized, a quantized constant
(weights, biases), or an IR integer tensor. Each supported ONNX op has one lowering
function registered in ``LOWERINGS``; anything else is refused with the node's name.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import ContractError, ModelError, ScaleRatioError, UnsupportedOpError
from ..ir import contract
from ..ir.graph import Graph, InputQuant, Node, Tensor
from ..registry import discover
from . import qonnx_validate
from .qonnx_input import FixedInput, quantize_annotated_input
from .qonnx_qdq import is_qdq, qdq_to_qonnx
from .qonnx_lowering import (LOWERINGS, ORIGINAL_NAME_TAG, PENDING_RESOLVERS, THRESHOLD_CHAIN, FloatConst,
                             FloatInput, IntValue, QuantConst, channels_last_perm, describe, ir_shape, lowering,
                             onnx_attrs, bias_codes)


# ---------------------------------------------------------------------------------------
# Loading and cleaning
# ---------------------------------------------------------------------------------------
# Op types that quantize; a graph with none of them is a float model.
QUANTIZER_OPS = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold")
# Quantizers of newer qonnx versions that edgekit does not compile (not float models either).
UNSUPPORTED_QUANTIZERS = {
    "FloatQuant": "minifloat (FP8-style) quantizers are not supported; edgekit compiles integer quantizers "
                  "(Quant, BipolarQuant, MultiThreshold)",
    "IntQuant": "qonnx's newer name for Quant is not supported yet; export with the Quant op type "
                "(e.g. Brevitas' export_qonnx)",
}


def float_model_error(source: str) -> ModelError:
    return ModelError(f"{source}: this is a float model (no Quant, BipolarQuant or MultiThreshold node); "
                      "edgekit compiles quantized models: quantize it with `edgekit quantize MODEL --data calib.npy` "
                      "(post-training), or train it with edgekit.qat (Brevitas) and export it with export_qonnx")


def declare_custom_domains(proto) -> None:
    """Declare the custom-op domains the nodes use (Brevitas' legacy ``onnx.brevitas``,
    ``finn.custom_op.general``, ``qonnx.custom_op.general``) in ``opset_import``, as newer
    exporters do. Older exports omit them; qonnx executes such files, while the ONNX checker
    refuses an undeclared domain. The checker still checks every standard node."""
    declared = {o.domain for o in proto.opset_import}
    for domain in sorted({n.domain for n in proto.graph.node} - declared - {"", "ai.onnx"}):
        entry = proto.opset_import.add()
        entry.domain, entry.version = domain, 1


def fix_symbolic_batch(proto) -> None:
    """Give a symbolic batch dimension (``dynamic_axes`` of torch.onnx.export, onnxruntime's
    tools) the size 1 that edgekit compiles; qonnx's shape inference would otherwise make it 0.
    Intermediate shapes are inferred again by the cleanup."""
    init = {t.name for t in proto.graph.initializer}
    changed = False
    for v in [v for v in proto.graph.input if v.name not in init] + list(proto.graph.output):
        tt = v.type.tensor_type
        if v.type.HasField("tensor_type") and tt.HasField("shape") and tt.shape.dim:
            d = tt.shape.dim[0]
            if d.dim_param or not d.HasField("dim_value"):
                d.dim_value = 1  # also clears dim_param (one of)
                changed = True
    if changed:
        del proto.graph.value_info[:]


def load_qonnx(path: str | Path):
    """Read, clean up (shape inference, constant folding, unique names) and return a ModelWrapper."""
    import onnx
    from onnx import checker

    path = Path(path)
    proto = qonnx_validate.read_model(path)
    if not proto.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (no graph nodes); the file may be "
                         "truncated or not ONNX at all: export it again")
    other_quantizer = next((n for n in proto.graph.node if n.op_type in UNSUPPORTED_QUANTIZERS), None)
    if other_quantizer is not None:
        raise UnsupportedOpError(f"{path}: node '{other_quantizer.name}' ({other_quantizer.op_type}): "
                                 f"{UNSUPPORTED_QUANTIZERS[other_quantizer.op_type]}")
    if not any(n.op_type in QUANTIZER_OPS for n in proto.graph.node) and is_qdq(proto):
        qonnx_validate.check_proto(proto, str(path))  # limits first: the conversion computes on the graph
        proto = qdq_to_qonnx(proto, str(path))
    if not any(n.op_type in QUANTIZER_OPS for n in proto.graph.node):
        raise float_model_error(str(path))
    qonnx_validate.check_proto(proto, str(path))
    declare_custom_domains(proto)
    fix_symbolic_batch(proto)
    try:
        checker.check_model(proto)
    except Exception as e:
        raise ModelError(f"{path}: malformed ONNX graph: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    # qonnx's cleanup renames every node (<OpType>_<n>); remember the user's names in
    # doc_string, which survives the cleanup, so that errors point at the user's graph.
    for i, node in enumerate(proto.graph.node):
        node.doc_string = ORIGINAL_NAME_TAG + (node.name or f"{node.op_type}#{i}")
    try:
        model = cleanup_model(ModelWrapper(proto))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelError(f"{path}: qonnx could not clean up the graph ({type(e).__name__}: {first})") from None
    qonnx_validate.check_cleaned(model, str(path), describe)
    return model


# Layers that may read the float input directly when its datatype is annotated.
ANNOTATED_INPUT_OPS = ("Gemm", "MatMul", "Conv")


# Ops that may consume a Transpose of quantized data (elementwise or flattening).
LAYOUT_FREE_OPS = ("Quant", "Relu", "Flatten", "Reshape", "Transpose", "Identity")


class Lowerer:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.env: dict[str, object] = {}
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.input_quant: InputQuant | None = None
        self.ir_input: str | None = None
        self.fixed_input: FixedInput | None = None  # --input-bits/--calibration (qonnx_input.py)
        self.qonnx_float_exact = True
        self.inexact: list[str] = []  # why the graph is not bit-exact with qonnx, if it is not
        # IR tensors holding a flattened channels-last feature map, with the permutation to
        # ONNX's channels-first flattening order (dense layers permute their weights instead)
        self.feature_perm: dict[str, np.ndarray] = {}
        # ONNX tensors that are transposes of stored data: name -> (stored ONNX shape, perm)
        self.transposed: dict[str, tuple] = {}

    # -- helpers --------------------------------------------------------------------
    def onnx_shape(self, onnx_name: str) -> tuple[int, ...]:
        s = self.model.get_tensor_shape(onnx_name)
        if s is None:
            raise ModelError(f"{self.source}: tensor '{onnx_name}' has no inferred shape")
        return tuple(int(d) for d in s[1:])  # drop the batch dimension

    def shape(self, onnx_name: str) -> tuple[int, ...]:
        """The IR (channels-last) per-sample shape of an ONNX tensor."""
        return ir_shape(self.onnx_shape(onnx_name))

    def value(self, node, idx: int = 0) -> IntValue:
        v = self.env.get(node.input[idx])
        self.int_input(node, idx, allow_pending=True)
        return v

    def const(self, node, idx: int, what: str) -> np.ndarray:
        v = self.env.get(node.input[idx])
        if not isinstance(v, FloatConst):
            raise UnsupportedOpError(f"{describe(node)}: {what} must be a constant")
        return v.value

    def int_input(self, node, idx: int = 0, allow_pending: bool = False) -> Tensor:
        v = self.env.get(node.input[idx])
        if node.input[idx] in self.transposed and node.op_type not in LAYOUT_FREE_OPS:
            raise UnsupportedOpError(f"{describe(node)}: its input is a transposed quantized tensor; edgekit "
                                     "supports a Transpose of quantized data only before Flatten (transpose the "
                                     "float input before the input quantizer instead)")
        if isinstance(v, IntValue):
            if v.pending is not None and not allow_pending:
                raise UnsupportedOpError(
                    f"{describe(node)}: its input comes from a {v.pending[0]} whose result is not quantized; "
                    f"put a quantizer (Quant node, e.g. Brevitas QuantIdentity) right after the {v.pending[0]}")
            return self.tensors[v.tensor]
        if isinstance(v, FloatInput) and self.input_quant is None and node.op_type in ANNOTATED_INPUT_OPS:
            quantize_annotated_input(self, node, idx, v)
            return self.tensors[self.ir_input]
        if isinstance(v, (FloatInput, FloatConst)):
            raise ModelError(
                f"{describe(node)}: input '{node.input[idx]}' is not quantized; "
                "every activation must pass through a Quant node (Brevitas QuantIdentity/QuantReLU "
                "or a quantized layer with an output quantizer) before it is computed on")
        raise ModelError(f"{describe(node)}: input '{node.input[idx]}' is "
                         "a quantized constant where an activation was expected")

    def quantize_float_input(self, node, src: FloatInput, out: Tensor, rounding: str = "qonnx") -> None:
        """Make ``node`` (a quantizer of the float input ``src``) the host-side input quantizer whose
        codes are the IR input ``out``; ``rounding`` as in InputQuant."""
        if self.input_quant is not None:
            raise UnsupportedOpError(f"{describe(node)}: the float input is quantized twice")
        pre_ops = list(src.pre_ops)
        onnx_shape = self.onnx_shape(node.output[0])
        if len(onnx_shape) in (2, 3):  # channels-first feature map -> channels-last codes
            pre_ops.append(("to_channels_last", list(onnx_shape)))
        self.input_quant = InputQuant(self.float_input_shape, out.scale[0], out.zero_point, out.qmin, out.qmax,
                                      out.bits, out.signed, pre_ops, rounding=rounding)
        self.ir_input = self.add_tensor(out)
        self.env[node.output[0]] = IntValue(out.name)

    def add_tensor(self, t: Tensor) -> str:
        self.tensors[t.name] = t
        return t.name

    def add_const(self, name: str, arr: np.ndarray, dtype: str, bits: int, signed: bool, scale) -> str:
        lo, hi = contract.quant_range(bits, signed, False)
        self.add_tensor(Tensor(name, tuple(arr.shape), dtype, bits, signed,
                               [float(s) for s in np.ravel(scale)], 0, lo, hi, const=True))
        self.constants[name] = arr.astype(np.dtype(dtype))
        return name

    def emit(self, node, op: str, inputs: list[str], out: Tensor, **attrs) -> None:
        self.add_tensor(out)
        self.nodes.append(Node(node.name, op, inputs, [out.name], attrs))
        self.env[node.output[0]] = IntValue(out.name)

    # -- driver ---------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        if len(g.input) != 1 or len(g.output) != 1:
            raise UnsupportedOpError(f"{self.source}: models with {len(g.input)} inputs and "
                                     f"{len(g.output)} outputs are not supported (one of each)")
        from onnx import numpy_helper

        for init in g.initializer:
            self.env[init.name] = FloatConst(numpy_helper.to_array(init))
        self.env[g.input[0].name] = FloatInput(self.onnx_shape(g.input[0].name))
        self.float_input_shape = self.onnx_shape(g.input[0].name)

        unsupported = [describe(n) for n in g.node if n.op_type not in LOWERINGS]
        if unsupported:
            raise UnsupportedOpError(
                f"{self.source}: unsupported op(s) {', '.join(unsupported)}; edgekit lowers "
                f"{', '.join(sorted(LOWERINGS))}")
        if not any(n.op_type in QUANTIZER_OPS for n in g.node):
            raise float_model_error(self.source)
        for node in g.node:
            try:
                LOWERINGS[node.op_type](self, node)
            except ScaleRatioError as e:  # the contract cannot name the node; its lowering's caller can
                raise ScaleRatioError(f"{describe(node)}: {e}; rescale the quantizers around it") from None

        out = self.env.get(g.output[0].name)
        output_post_ops = []
        if isinstance(out, IntValue) and out.pending is not None and out.pending[0] == "affine":
            # float arithmetic after the last layer: part of the host-side output description
            output_post_ops, out = [list(step) for step in out.pending[1]], IntValue(out.tensor)
        if isinstance(out, IntValue) and out.pending is not None:
            producer = next((n for n in g.node if g.output[0].name in n.output), None)
            where = describe(producer) if producer is not None else "the last node"
            raise UnsupportedOpError(f"{self.source}: the graph output comes from {where}, a {out.pending[0]} whose "
                                     "result is not quantized; end the model with a quantizer (e.g. QuantIdentity)")
        if g.output[0].name in self.transposed:
            raise UnsupportedOpError(f"{self.source}: the graph output is a transposed quantized tensor; "
                                     "end the model before the Transpose or flatten it")
        if isinstance(out, IntValue) and out.tensor in self.feature_perm:
            raise UnsupportedOpError(f"{self.source}: the graph output is a flattened feature map; "
                                     "flattened maps can only feed dense layers")
        if not isinstance(out, IntValue):
            raise ModelError(f"{self.source}: the graph output '{g.output[0].name}' is not a quantized "
                             "tensor; end the model with a quantizer (e.g. QuantIdentity) or a quantized layer")
        if self.input_quant is None:
            raise ModelError(f"{self.source}: the graph input is never quantized")
        if self.fixed_input is not None and self.input_quant.annotation != self.fixed_input.annotation:
            raise UnsupportedOpError(f"{self.source}: --input-bits/--calibration apply to a model whose first layer "
                                     "reads the float input; this one quantizes its input itself, so leave them out")
        out_onnx = self.onnx_shape(g.output[0].name)
        return Graph(self.tensors, self.nodes, [self.ir_input], [out.tensor], self.constants,
                     self.input_quant, meta={"source": self.source,
                                             "qonnx_float_exact": self.qonnx_float_exact,
                                             "inexact": self.inexact,
                                             "output_post_ops": output_post_ops,
                                             "output_onnx_shape": list(out_onnx)})


# ---------------------------------------------------------------------------------------
# Lowerings, one per ONNX op type
# ---------------------------------------------------------------------------------------
@lowering("Quant")
def lower_quant(lw: Lowerer, node) -> None:
    a = onnx_attrs(node)
    mode = a.get("rounding_mode", b"ROUND")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "ROUND":
        raise UnsupportedOpError(f"{describe(node)}: rounding_mode {mode} is not supported "
                                 "(edgekit implements ROUND, half to even)")
    scale = np.asarray(lw.const(node, 1, "the scale"), dtype=np.float32)
    zp = np.asarray(lw.const(node, 2, "the zero point"), dtype=np.float32)
    bits_f = float(np.asarray(lw.const(node, 3, "the bit width")).ravel()[0])
    if not np.isfinite(bits_f) or bits_f != int(bits_f) or not 1 <= bits_f <= qonnx_validate.MAX_BITS:
        raise UnsupportedOpError(f"{describe(node)}: bit width {bits_f} is not supported "
                                 "(integer widths of 1 or more)")
    bits, signed, narrow = int(bits_f), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
    if bits == 1 and signed:  # qonnx executes a signed 1-bit Quant as a BipolarQuant (-1/+1), narrow or not
        if np.any(np.asarray(lw.const(node, 2, "the zero point")) != 0):
            raise UnsupportedOpError(f"{describe(node)}: a signed 1-bit Quant with a nonzero zero point")
        LOWERINGS["BipolarQuant"](lw, node)
        return
    if not np.all(np.isfinite(zp)) or np.any(zp != np.round(zp)):
        raise UnsupportedOpError(f"{describe(node)}: non-integer zero point")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelError(f"{describe(node)}: scale must be positive and finite")
    qmin, qmax = contract.quant_range(bits, signed, narrow)
    src = lw.env.get(node.input[0])

    if isinstance(src, FloatConst):  # weights or bias
        codes = contract.quantize(src.value, scale, zp, qmin, qmax)
        lw.env[node.output[0]] = QuantConst(codes, scale, zp, bits, signed)
        return

    if scale.size != 1 or zp.size != 1:
        raise UnsupportedOpError(f"{describe(node)}: per-channel activation scales are not "
                                 "supported; use a per-tensor activation quantizer")
    s, z = float(scale.ravel()[0]), int(zp.ravel()[0])
    dtype = contract.storage_dtype(bits, signed, describe(node))
    out = Tensor(node.output[0], lw.shape(node.output[0]), dtype, bits, signed, [s], z, qmin, qmax)

    if isinstance(src, FloatInput):  # the input quantizer: runs on the host
        lw.quantize_float_input(node, src, out)
        return

    v = lw.value(node)
    t = lw.tensors[v.tensor]
    if v.pending is not None:
        PENDING_RESOLVERS[v.pending[0]](lw, node, v, out)
        return
    if len(t.scale) != 1 and t.dtype != "int32":
        raise UnsupportedOpError(f"{describe(node)}: per-channel input scale")
    rq = contract.requant_for_scales(np.asarray(t.scale), s, z, qmin, qmax)
    lw.emit(node, "requantize", [t.name], out, requant=rq)
    if v.tensor in lw.feature_perm:
        lw.feature_perm[out.name] = lw.feature_perm[v.tensor]
    if node.input[0] in lw.transposed:
        lw.transposed[node.output[0]] = lw.transposed[node.input[0]]


@lowering("Gemm", "MatMul")
def lower_dense(lw: Lowerer, node) -> None:
    a = onnx_attrs(node)
    if node.op_type == "Gemm":
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            raise UnsupportedOpError(f"{describe(node)}: alpha/beta other than 1 or transA")
    x = lw.int_input(node, 0)
    w = lw.env.get(node.input[1])
    if not isinstance(w, QuantConst):
        raise ModelError(f"{describe(node)}: the weights are not quantized; "
                         "use a quantized layer (Brevitas QuantLinear with a weight quantizer)")
    if w.codes.ndim != 2:
        raise UnsupportedOpError(f"{describe(node)}: weights of rank {w.codes.ndim}")
    trans_b = node.op_type == "Gemm" and a.get("transB", 0)
    codes = w.codes if trans_b else w.codes.T  # IR layout: [out, in]
    if x.name in lw.feature_perm:  # the input is a channels-last map flattened: permute the weights
        codes = codes[:, lw.feature_perm[x.name]]
    w_scale = np.ravel(w.scale).astype(np.float64)
    if np.any(w.zero_point != 0):
        raise UnsupportedOpError(f"{describe(node)}: asymmetric weights (zero point != 0) are not supported")
    if len(x.shape) != 1 or x.shape[0] != codes.shape[1]:
        raise UnsupportedOpError(f"{describe(node)}: input shape {x.shape} does not match weights {codes.shape}")
    if w.bits > 8:
        raise ContractError(f"{describe(node)}: {w.bits}-bit weights; edgekit holds weights in at most 8 bits")
    if len(x.scale) != 1:
        raise UnsupportedOpError(f"{describe(node)}: input with per-channel scale")
    acc_scale = np.float64(x.scale[0]) * w_scale
    if acc_scale.size == 1:
        acc_scale = np.full(codes.shape[0], acc_scale[0])

    bias = np.zeros(codes.shape[0], np.int64)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = bias_codes(lw, node, node.input[2], acc_scale)
    _emit_dense(lw, node, x, codes, w, bias, acc_scale)


def _emit_dense(lw: Lowerer, node, x: Tensor, codes, w: QuantConst, bias, acc_scale) -> None:
    # Fold the input zero point into the bias so the kernel multiplies raw codes.
    folded = bias - x.zero_point * codes.sum(axis=1)
    bound = contract.accumulator_bound(codes, folded, x.qmin, x.qmax)
    contract.check_accumulator(describe(node), bound)
    # qonnx runs in float32; it is exact only while |sum| < 2**24.
    real_bound = contract.accumulator_bound(codes, bias, x.qmin - x.zero_point, x.qmax - x.zero_point)
    if int(real_bound.max()) >= contract.FLOAT32_EXACT_INT:
        lw.qonnx_float_exact = False
    wname = lw.add_const(f"{node.name}_weight", codes, "int8", w.bits, w.signed, np.ravel(w.scale))
    bname = lw.add_const(f"{node.name}_bias", folded, "int32", 32, True, acc_scale)
    out = Tensor(node.output[0], (codes.shape[0],), "int32", 32, True, [float(s) for s in acc_scale], 0,
                 contract.INT32_MIN, contract.INT32_MAX)
    lw.emit(node, "dense", [x.name, wname, bname], out, requant=None)


@lowering("Relu")
def lower_relu(lw: Lowerer, node) -> None:
    v = lw.env.get(node.input[0])
    if isinstance(v, IntValue) and v.pending is not None and v.pending[0] == THRESHOLD_CHAIN:
        lw.env[node.output[0]] = IntValue(v.tensor, (v.pending[0], v.pending[1] + (node,)))  # joins the float chain
        return
    t = lw.int_input(node)
    out = Tensor(node.output[0], t.shape, t.dtype, t.bits, t.signed, list(t.scale), t.zero_point,
                 max(t.qmin, t.zero_point), t.qmax)
    lw.emit(node, "relu", [t.name], out)
    if node.input[0] in lw.transposed:
        lw.transposed[node.output[0]] = lw.transposed[node.input[0]]


@lowering("Flatten", "Reshape")
def lower_reshape(lw: Lowerer, node) -> None:
    src = lw.env.get(node.input[0])
    onnx_out = lw.onnx_shape(node.output[0])
    if isinstance(src, FloatInput):
        lw.env[node.output[0]] = FloatInput(onnx_out, src.pre_ops + (("reshape", list(onnx_out)),))
        return
    t = lw.int_input(node)
    onnx_in = lw.onnx_shape(node.input[0])
    if len(onnx_out) != 1 and tuple(onnx_out) != tuple(onnx_in):
        raise UnsupportedOpError(f"{describe(node)}: reshape {onnx_in} -> {onnx_out}; edgekit supports "
                                 "flattening to one dimension")
    perm = channels_last_perm(onnx_in)
    if t.name in lw.feature_perm:
        perm = lw.feature_perm[t.name]
    if node.input[0] in lw.transposed:  # flattening a transposed map: ONNX order is a permutation of ours
        base, tperm = lw.transposed[node.input[0]]
        onnx_pos = np.arange(int(np.prod(base))).reshape([base[p] for p in tperm])
        in_base = onnx_pos.transpose(np.argsort(tperm))
        perm = np.moveaxis(in_base, 0, -1).ravel() if len(base) in (2, 3) else in_base.ravel()
        if len(onnx_out) != 1:
            raise UnsupportedOpError(f"{describe(node)}: a transposed tensor can only be flattened")
    new_shape = ir_shape(onnx_out)
    out = Tensor(node.output[0], new_shape, t.dtype, t.bits, t.signed, list(t.scale), t.zero_point, t.qmin, t.qmax)
    lw.emit(node, "reshape", [t.name], out)
    if perm is not None:
        lw.feature_perm[out.name] = perm


@lowering("Identity")
def lower_identity(lw: Lowerer, node) -> None:
    lw.env[node.output[0]] = lw.env.get(node.input[0])
    if node.input[0] in lw.transposed:
        lw.transposed[node.output[0]] = lw.transposed[node.input[0]]


@lowering("Transpose")
def lower_transpose(lw: Lowerer, node) -> None:
    src = lw.env.get(node.input[0])
    perm = list(onnx_attrs(node).get("perm", []))
    if isinstance(src, FloatInput):  # e.g. (N, T, C) windows -> (N, C, T) for Conv1d: replayed on the host
        lw.env[node.output[0]] = FloatInput(lw.onnx_shape(node.output[0]),
                                            src.pre_ops + (("transpose", [p - 1 for p in perm[1:]]),))
        return
    # A quantized tensor: no data moves. Remember how the ONNX tensor is permuted relative to
    # the stored (channels-last) data; a following Flatten folds it into the dense weights.
    lw.int_input(node)
    base, prev = lw.transposed.get(node.input[0], (lw.onnx_shape(node.input[0]), list(range(len(perm) - 1))))
    lw.transposed[node.output[0]] = (base, [prev[p - 1] for p in perm[1:]])
    lw.env[node.output[0]] = lw.env[node.input[0]]


discover(f"{__package__}.qonnx_ops")  # registers the per-op lowerings and resolvers


def import_qonnx(path: str | Path, fixed_input: FixedInput | None = None) -> tuple[Graph, object]:
    """Load, clean and lower a QONNX file; returns the IR graph and the cleaned ModelWrapper.

    ``fixed_input`` (``--input-bits``/``--calibration``) gives the input quantizer of a graph whose
    first layer reads the float input (qonnx_input.calibrated_input_quant)."""
    model = load_qonnx(path)
    lowerer = Lowerer(model, str(path))
    lowerer.fixed_input = fixed_input
    graph = lowerer.run()
    graph.meta["source_sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return graph, model
