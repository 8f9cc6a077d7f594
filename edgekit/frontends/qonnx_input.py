"""The input quantizer of a graph whose first layer reads the float input directly, derived
from the input's datatype annotation (FINN, qonnx: ``ModelWrapper.set_tensor_datatype``),
e.g. the UNSW-NB15 MLP's BIPOLAR input mapped by ``(x + 1) / 2`` to {0, 1}.

The annotated values, passed through the float pre-processing (scalar steps only), must
form an evenly spaced grid ``scale * q`` with integer ``q``: the host quantizes onto it
(round to nearest, clamp). qonnx computes on the float input as given, so verify feeds it the
grid points the codes stand for (``InputQuant.annotation``).
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import contract
from ..ir.graph import INVERSE_STEPS, InputQuant, Tensor, apply_float_steps
from .qonnx_lowering import IntValue, describe, ir_shape


def annotated_values(model, name: str) -> tuple[str, np.ndarray] | None:
    """The annotated datatype of a graph input and its values, or None (float or unannotated)."""
    dt = model.get_tensor_datatype(name)
    if dt is None or not dt.is_integer():
        return None
    if dt.bitwidth() > 16:
        return None
    step = 2 if dt.name == "BIPOLAR" else 1
    return dt.name, np.arange(int(dt.min()), int(dt.max()) + 1, step, dtype=np.float64)


def quantize_annotated_input(lw, node, idx: int, src) -> None:
    """Make the input quantizer of the float input ``src`` that ``node`` computes on."""
    graph_input = lw.model.graph.input[0].name
    found = annotated_values(lw.model, graph_input)
    if found is None:
        raise UnsupportedOpError(
            f"{describe(node)}: reads the float input without an input quantizer; put a Quant node "
            "(Brevitas QuantIdentity) before it, or annotate the input's integer datatype "
            f"(qonnx: model.set_tensor_datatype('{graph_input}', DataType['INT8']))")
    dtype_name, values = found
    steps = [(op, arg) for op, arg in src.pre_ops if op in INVERSE_STEPS]
    if any(np.asarray(arg).size != 1 for _, arg in steps):
        raise UnsupportedOpError(f"{describe(node)}: float pre-processing with per-element constants on an "
                                 f"annotated ({dtype_name}) input; edgekit maps the annotation through scalar steps")
    grid = apply_float_steps(values, steps).astype(np.float64)
    if len(grid) < 2:
        raise UnsupportedOpError(f"{describe(node)}: the input's datatype {dtype_name} has a single value")
    scale = float(grid[1] - grid[0])
    codes = grid / scale if scale > 0 else grid
    if scale <= 0 or not np.array_equal(codes, np.round(codes)) or not np.all(np.diff(codes) == 1):
        raise UnsupportedOpError(f"{describe(node)}: the {dtype_name} input after its float pre-processing takes "
                                 f"values {grid.tolist()[:4]}..., not an evenly spaced integer multiple of one scale")
    qmin, qmax = int(codes[0]), int(codes[-1])
    signed = qmin < 0
    bits = max(1, int(max(abs(qmin), abs(qmax))).bit_length() + int(signed))
    shape = lw.onnx_shape(node.input[idx])
    pre_ops = list(src.pre_ops)
    if len(shape) in (2, 3):
        pre_ops.append(("to_channels_last", list(shape)))
    lw.input_quant = InputQuant(lw.float_input_shape, scale, 0, qmin, qmax, bits, signed, pre_ops,
                                annotation=dtype_name)
    dtype = contract.storage_dtype(bits, signed, describe(node))
    name = node.input[idx]
    lw.ir_input = lw.add_tensor(Tensor(name, ir_shape(shape), dtype, bits, signed, [scale], 0, qmin, qmax))
    lw.env[name] = IntValue(name)
