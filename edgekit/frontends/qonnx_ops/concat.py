"""Concat along channels of tensors on the same grid -> IR ``concat``."""
from __future__ import annotations

from ...errors import UnsupportedOpError
from ...ir.graph import Tensor
from ..qonnx_lowering import describe, lowering, onnx_attrs


@lowering("Concat")
def lower_concat(lw, node) -> None:
    ins = [lw.int_input(node, i) for i in range(len(node.input))]
    rank = len(lw.onnx_shape(node.input[0])) + 1
    axis = int(onnx_attrs(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        raise UnsupportedOpError(f"{describe(node)}: concat along axis {axis}; edgekit concatenates channels (axis 1)")
    first = ins[0]
    for t in ins[1:]:
        if (t.scale, t.zero_point, t.dtype) != (first.scale, first.zero_point, first.dtype):
            raise UnsupportedOpError(f"{describe(node)}: inputs have different quantization; share one quantizer "
                                     "across the concatenated tensors (Brevitas QuantCat / a shared QuantIdentity)")
        if t.shape[:-1] != first.shape[:-1]:
            raise UnsupportedOpError(f"{describe(node)}: spatial shapes {t.shape} and {first.shape} differ")
    shape = first.shape[:-1] + (sum(t.shape[-1] for t in ins),)
    out = Tensor(node.output[0], shape, first.dtype, first.bits, first.signed, list(first.scale), first.zero_point,
                 min(t.qmin for t in ins), max(t.qmax for t in ins))
    lw.emit(node, "concat", [t.name for t in ins], out)
