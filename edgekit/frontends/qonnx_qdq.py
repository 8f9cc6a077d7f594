"""QDQ ONNX (QuantizeLinear/DequantizeLinear, as written by onnxruntime's ``quantize_static``
and PyTorch's quantizers) -> QONNX, with qonnx's own ``QCDQToQuant`` transformation.

Every QuantizeLinear -> DequantizeLinear pair becomes one ``Quant`` node with the same scale,
zero point and bit width (from the integer type), and a DequantizeLinear of an integer
initializer (weights, int32 biases) becomes a ``Quant`` of the dequantized values. What is
left afterwards (a Q or DQ that is not part of such a pair) is refused naming the node.
"""
from __future__ import annotations

from ..errors import ModelError, UnsupportedOpError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# onnxruntime's QOperator format: integer kernels with their own requantization, no float graph
# to convert back to Quant nodes.
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
                 "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")


def is_qdq(proto) -> bool:
    return any(n.op_type in QDQ_OPS + QOPERATOR_OPS for n in proto.graph.node)


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _broadcast_per_axis_constants(model) -> None:
    """qonnx 1.0's QCDQToQuant dequantizes a constant DQ input with its per-axis scale before
    it reshapes the scale for broadcasting (numpy then refuses (C, 1, k, k) * (C,)); give the
    scale and zero point of such a DQ the broadcasting shape and drop the axis, which is then
    implied. The DQ node itself is replaced by the transformation, so its attributes do not
    outlive this step."""
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2:
            continue
        codes, scale = model.get_initializer(node.input[0]), model.get_initializer(node.input[1])
        if codes is None or scale is None or scale.ndim != 1 or scale.size == 1:
            continue
        axis = _axis(node) % codes.ndim
        shape = [1] * codes.ndim
        shape[axis] = scale.size
        model.set_initializer(node.input[1], scale.reshape(shape))
        if len(node.input) > 2 and node.input[2]:
            zero_point = model.get_initializer(node.input[2])
            if zero_point is not None:
                model.set_initializer(node.input[2], zero_point.reshape(shape))
        for attr in [a for a in node.attribute if a.name == "axis"]:
            node.attribute.remove(attr)


def _check_zero_points(model, source: str) -> None:
    """QCDQToQuant needs explicit scale and zero point constants (the zero point may be omitted
    in ONNX; onnxruntime and PyTorch always write it) and subtracts the zero point from the
    integer codes in their own type, which would wrap for int8 weights with a non-zero point."""
    for i, node in enumerate(model.graph.node):
        if node.op_type not in QDQ_OPS:
            continue
        name = node.name or f"{node.op_type}#{i}"
        if len(node.input) < 3 or not node.input[2] or model.get_initializer(node.input[1]) is None \
                or model.get_initializer(node.input[2]) is None:
            raise UnsupportedOpError(f"{source}: node '{name}' ({node.op_type}): scale and zero point must be "
                                     "constant initializers (write the zero point explicitly)")
        codes = model.get_initializer(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if codes is not None and (model.get_initializer(node.input[2]) != 0).any():
            raise UnsupportedOpError(f"{source}: node '{name}' (DequantizeLinear): constant codes with a "
                                     "non-zero zero point (asymmetric weights); quantize weights symmetrically "
                                     "(onnxruntime: weight_type=QuantType.QInt8)")


def qdq_to_qonnx(proto, source: str):
    """The QONNX graph of a QDQ model (an onnx ModelProto in, one out)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.qcdq_to_qonnx import QCDQToQuant

    qop = next((n for n in proto.graph.node if n.op_type in QOPERATOR_OPS), None)
    if qop is not None:
        raise UnsupportedOpError(f"{source}: node '{qop.name}' ({qop.op_type}): onnxruntime's QOperator format is "
                                 "not supported; quantize with quant_format=QuantFormat.QDQ (QuantizeLinear/"
                                 "DequantizeLinear around float operators) instead")
    model = ModelWrapper(proto)
    try:
        # QCDQToQuant reads the integer type of each QuantizeLinear's output from its value info
        model = model.transform(InferShapes())
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{source}: ONNX shape inference failed on the QDQ graph ({first})") from None
    _check_zero_points(model, source)
    _broadcast_per_axis_constants(model)
    try:
        model = model.transform(QCDQToQuant())
    except (ValueError, AssertionError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnsupportedOpError(f"{source}: qonnx could not convert the QuantizeLinear/DequantizeLinear nodes "
                                 f"to Quant nodes ({type(e).__name__}: {first})") from None
    left = next((n for n in model.graph.node if n.op_type in QDQ_OPS), None)
    if left is not None:
        raise UnsupportedOpError(f"{source}: node '{left.name}' ({left.op_type}) is not part of a QuantizeLinear -> "
                                 "DequantizeLinear pair with the same constant scale and zero point, nor a "
                                 "DequantizeLinear of constant codes; edgekit converts only those")
    return model.model
