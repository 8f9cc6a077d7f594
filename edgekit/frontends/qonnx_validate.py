"""Validation of a QONNX file before anything computes on it (issue 17, bug 5).

A hostile or damaged file must end in one clear error naming the node, in bounded time and
memory, before qonnx's cleanup, shape inference or edgekit's lowering see it:

- ``read_model``: only regular files of bounded size; external data only from regular files
  inside the model's own folder, checked before any of them is opened;
- ``check_proto`` (before cleanup): tensor sizes and data types, one float32 graph input of
  known positive dimensions, the Quant/Trunc parameters (bit widths, scales, zero points),
  and the window attributes of Conv and pooling nodes;
- ``check_cleaned`` (after cleanup, with inferred shapes): convolution attributes against
  their weights and inputs, and every inferred shape positive.

Every refusal is a documented limit (docs/limits.md).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError, UnsupportedOpError

MAX_MODEL_BYTES = 256 << 20  # the file plus its external data; no Cortex-M flash holds more than a few MiB
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_QUANT_PARAM_ELEMENTS = 1 << 16  # per-channel scales: at most this many channels
MAX_INPUT_ELEMENTS = 1 << 24
MAX_WINDOW = 1 << 12  # kernel size, stride, dilation per axis
MIN_SCALE, MAX_SCALE = 2.0 ** -64, 2.0 ** 64
MAX_BITS = 32
MIN_OPSET = 7  # the oldest opset of the published QONNX files (most use 9 to 13)
WINDOW_OPS = ("Conv", "MaxPool", "AveragePool")
# input index -> what it is, for the custom quantization ops
QUANT_PARAMS = {"Quant": {1: "scale", 2: "zero point", 3: "bit width"},
                "Trunc": {1: "scale", 2: "zero point", 3: "input bit width", 4: "output scale",
                          5: "output bit width"}}
QUANT_ARITY = {"Quant": 4, "Trunc": 6}


def _describe(node, index: int) -> str:
    name = node.name or f"#{index}"
    return f"node '{name}' ({node.op_type})"


def read_model(path: Path):
    """The ModelProto of ``path`` with its external data, read only from inside its folder."""
    import onnx

    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a regular file (a directory, device or pipe); give the model file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: the file is empty")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: {size} bytes; edgekit reads model files of at most {MAX_MODEL_BYTES >> 20} MiB")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises assorted errors on truncated/corrupt files
        raise ModelError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "the file may be truncated or corrupt: export it again") from None
    _load_external_data(proto, path, size)
    return proto


def _all_tensors(graph):
    """Every TensorProto of a graph: initializers, sparse initializers, node attributes, subgraphs."""
    from onnx import AttributeProto

    yield from graph.initializer
    for s in graph.sparse_initializer:
        yield s.values
        yield s.indices
    for node in graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR:
                yield a.t
            elif a.type == AttributeProto.TENSORS:
                yield from a.tensors
            elif a.type == AttributeProto.GRAPH:
                yield from _all_tensors(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _all_tensors(g)


def _load_external_data(proto, path: Path, model_bytes: int) -> None:
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_tensor

    folder = path.resolve().parent
    total = model_bytes
    external = [t for t in _all_tensors(proto.graph) if t.data_location == TensorProto.EXTERNAL]
    checked = []
    for t in external:  # every location is checked before any file is opened
        info = {e.key: e.value for e in t.external_data}
        where = f"{path}: initializer '{t.name}' has external data"
        location = info.get("location", "")
        if not location or os.path.isabs(location) or ".." in Path(location).parts:
            raise ModelError(f"{where} at '{location}'; external data must be a file in the model's own folder")
        target = (folder / location).resolve()
        if target == folder or not target.is_relative_to(folder):
            raise ModelError(f"{where} at '{location}', which is not a file inside the model's folder")
        if not target.is_file():
            raise ModelError(f"{where} at '{location}', which is not a regular file in the model's folder")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise ModelError(f"{where} with a non-integer offset or length") from None
        file_size = target.stat().st_size
        if length < 0:
            length = file_size - offset
        if offset < 0 or offset + length > file_size:
            raise ModelError(f"{where} at offset {offset}, length {length} beyond the end of '{location}' "
                             f"({file_size} bytes)")
        total += length
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: the model and its external data exceed {MAX_MODEL_BYTES >> 20} MiB")
        checked.append(t)
    for t in checked:
        try:
            load_external_data_for_tensor(t, str(folder))
        except Exception as e:
            raise ModelError(f"{path}: cannot read the external data of '{t.name}' ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------
# Before cleanup
# ---------------------------------------------------------------------------------------
def _itemsize(data_type: int) -> int | None:
    from onnx import TensorProto, helper

    if data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:
        return None


def _check_tensor(t, source: str) -> None:
    what = f"{source}: tensor '{t.name}'"
    if any(d < 0 for d in t.dims):
        raise ModelError(f"{what} has a negative dimension {list(t.dims)}")
    count = math.prod(t.dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"{what} has {count} elements; edgekit accepts tensors of at most {MAX_TENSOR_ELEMENTS}")
    itemsize = _itemsize(t.data_type)
    if itemsize is None:
        raise ModelError(f"{what} has data type {t.data_type} (strings or undefined); tensors must be numbers")
    if t.raw_data:
        if len(t.raw_data) != count * itemsize:
            raise ModelError(f"{what}: {len(t.raw_data)} bytes of data for shape {list(t.dims)}")
    else:
        from onnx import numpy_helper

        try:
            numpy_helper.to_array(t)
        except Exception:
            raise ModelError(f"{what}: its data does not match its shape {list(t.dims)}") from None


def _constants(graph) -> dict:
    """Initializers and Constant-node values by name, as TensorProtos."""
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = a.t
    return out


def check_proto(proto, source: str) -> None:
    """Structural limits on the raw graph, before qonnx's cleanup computes anything on it."""
    import onnx

    graph = proto.graph
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and not MIN_OPSET <= o.version <= onnx.defs.onnx_opset_version():
            raise UnsupportedOpError(f"{source}: ONNX opset {o.version}; edgekit reads opsets {MIN_OPSET} to "
                                     f"{onnx.defs.onnx_opset_version()}")
    for t in _all_tensors(graph):
        _check_tensor(t, source)
    _check_graph_input(graph, source)
    tensors = _constants(graph)
    for i, node in enumerate(graph.node):
        if node.op_type in QUANT_ARITY:
            _check_quant(node, i, tensors)
        if node.op_type in WINDOW_OPS:
            _check_window(node, i)


def _check_graph_input(graph, source: str) -> None:
    from onnx import TensorProto

    init = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init]
    if len(inputs) != 1:
        raise UnsupportedOpError(f"{source}: the graph has {len(inputs)} inputs; edgekit compiles models "
                                 "with exactly one input")
    v = inputs[0]
    tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
    if tt is None or tt.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(tt.elem_type) if tt is not None and tt.elem_type in \
            TensorProto.DataType.values() else "not a tensor"
        raise UnsupportedOpError(f"{source}: the graph input '{v.name}' is {kind}; edgekit takes one float32 input")
    if not tt.HasField("shape"):
        raise UnsupportedOpError(f"{source}: the graph input '{v.name}' has no shape; export with a fixed input shape")
    dims = list(tt.shape.dim)
    if not 2 <= len(dims) <= 4:
        raise UnsupportedOpError(f"{source}: the graph input '{v.name}' has rank {len(dims)}; edgekit takes "
                                 "(batch, features), (batch, channels, length) or (batch, channels, height, width)")
    for k, d in enumerate(dims):
        if k == 0 and (d.dim_param or d.dim_value == 1):
            continue  # the batch dimension: 1 or symbolic
        if d.dim_param or not d.HasField("dim_value"):
            raise UnsupportedOpError(f"{source}: dimension {k} of the graph input '{v.name}' is symbolic "
                                     f"('{d.dim_param}'); only the batch dimension may be")
        if k == 0:
            raise UnsupportedOpError(f"{source}: the graph input '{v.name}' has batch dimension {d.dim_value}; "
                                     "export with batch 1")
        if d.dim_value <= 0:
            raise UnsupportedOpError(f"{source}: dimension {k} of the graph input '{v.name}' is {d.dim_value}")
    count = math.prod(d.dim_value for d in dims[1:])
    if count > MAX_INPUT_ELEMENTS:
        raise UnsupportedOpError(f"{source}: the graph input '{v.name}' has {count} elements per sample; "
                                 f"edgekit takes at most {MAX_INPUT_ELEMENTS}")


def _check_quant(node, index: int, tensors: dict) -> None:
    from onnx import numpy_helper

    what = _describe(node, index)
    arity = QUANT_ARITY[node.op_type]
    if len(node.input) != arity or len(node.output) != 1 or not all(node.input):
        raise ModelError(f"{what}: {len(node.input)} inputs and {len(node.output)} outputs; a {node.op_type} "
                         f"node has {arity} inputs and 1 output")
    values = {}
    for idx, name in QUANT_PARAMS[node.op_type].items():
        t = tensors.get(node.input[idx])
        if t is None:
            raise UnsupportedOpError(f"{what}: the {name} must be a constant")
        count = math.prod(t.dims)
        limit = 1 if "bit width" in name else MAX_QUANT_PARAM_ELEMENTS
        if count == 0 or count > limit:
            raise ModelError(f"{what}: the {name} has {count} values; at most {limit}")
        v = numpy_helper.to_array(t).astype(np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise ModelError(f"{what}: the {name} is not finite ({v[~np.isfinite(v)][0]})")
        values[name] = v
    for name, v in values.items():
        if "bit width" in name:
            b = float(v[0])
            if b != round(b) or not 1 <= b <= MAX_BITS:
                raise UnsupportedOpError(f"{what}: the {name} is {b:g}; edgekit supports integer widths "
                                         f"from 1 to {MAX_BITS}")
        elif "scale" in name:
            if np.any(v <= 0) or np.any(v < MIN_SCALE) or np.any(v > MAX_SCALE):
                bad = v[(v <= 0) | (v < MIN_SCALE) | (v > MAX_SCALE)][0]
                raise UnsupportedOpError(f"{what}: the {name} {bad:g} is outside (2^-64, 2^64); scales must be "
                                         "positive and of a sane magnitude")
        elif np.any(v != np.round(v)) or np.any(np.abs(v) > 2.0 ** 31):
            bad = v[(v != np.round(v)) | (np.abs(v) > 2.0 ** 31)][0]
            raise UnsupportedOpError(f"{what}: the {name} {bad:g} is not an int32 integer")
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Quant":  # qonnx's Quant requires both (it cannot execute the graph without them)
        missing = [flag for flag in ("signed", "narrow") if flag not in attrs]
        if missing:
            raise ModelError(f"{what}: attribute {' and '.join(missing)} missing; a Quant node carries signed "
                             "and narrow (0 or 1): export the model again")
    for flag in ("signed", "narrow"):
        if attrs.get(flag, 0) not in (0, 1):
            raise ModelError(f"{what}: attribute {flag}={attrs[flag]}; it must be 0 or 1")
    if node.op_type == "Quant":
        bits, signed, narrow = int(values["bit width"][0]), attrs.get("signed", 1), attrs.get("narrow", 0)
        lo = -(1 << (bits - 1)) + narrow if signed else 0
        hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
        zp = values["zero point"]
        if np.any(zp < lo) or np.any(zp > hi):
            raise UnsupportedOpError(f"{what}: zero point {zp[(zp < lo) | (zp > hi)][0]:g} is outside the "
                                     f"{bits}-bit code range [{lo}, {hi}]")


def _check_window(node, index: int) -> None:
    from onnx import helper

    what = _describe(node, index)
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    auto_pad = a.get("auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
        raise UnsupportedOpError(f"{what}: auto_pad is not supported; export explicit pads")
    kernel = a.get("kernel_shape")
    if kernel is None and node.op_type != "Conv":
        raise ModelError(f"{what}: no kernel_shape")
    rank = len(kernel) if kernel is not None else len(a.get("strides", a.get("dilations", [1, 1])))
    if rank not in (1, 2):
        raise UnsupportedOpError(f"{what}: a {rank}D window; edgekit supports 1D and 2D")
    lists = {"kernel_shape": kernel, "strides": a.get("strides"), "dilations": a.get("dilations")}
    for name, v in lists.items():
        if v is None:
            continue
        if len(v) != rank:
            raise ModelError(f"{what}: {name} {list(v)} has {len(v)} values for a {rank}D window")
        if any(not 1 <= int(x) <= MAX_WINDOW for x in v):
            raise UnsupportedOpError(f"{what}: {name} {list(v)}; each must be between 1 and {MAX_WINDOW}")
    pads = a.get("pads")
    if pads is not None:
        if len(pads) != 2 * rank:
            raise ModelError(f"{what}: pads {list(pads)} has {len(pads)} values for a {rank}D window")
        if kernel is not None:
            dil = a.get("dilations") or [1] * rank
            extent = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
            # A pooling output that sees only padding has no defined value, so pools keep every pad
            # below the window extent; a convolution's such outputs are its bias (PyTorch exports
            # a 1x1 conv with padding 1), so a conv pad may reach the extent, never beyond.
            conv = node.op_type == "Conv"
            for i, p in enumerate(pads):
                if not 0 <= p < extent[i % rank] + int(conv):
                    bound = "at most" if conv else "smaller than"
                    raise UnsupportedOpError(
                        f"{what}: pads {list(pads)}; each pad must be at least 0 and {bound} the window "
                        f"extent {extent}")
        elif any(p < 0 for p in pads):
            raise UnsupportedOpError(f"{what}: negative pads {list(pads)}")
    if node.op_type == "Conv" and not 1 <= int(a.get("group", 1)) <= 1 << 16:
        raise UnsupportedOpError(f"{what}: group {a.get('group')}")
    if node.op_type == "Conv" and len(node.input) < 2:
        raise ModelError(f"{what}: {len(node.input)} input(s); a Conv has an input, weights and an optional bias")


# ---------------------------------------------------------------------------------------
# After cleanup (shapes inferred)
# ---------------------------------------------------------------------------------------
def _shape(model, name: str):
    init = model.get_initializer(name)
    return list(init.shape) if init is not None else model.get_tensor_shape(name)


def _check_broadcast(model, node, describe) -> None:
    """A quantizer's scale and zero point broadcast over its input (per tensor or per channel)."""
    x_shape = _shape(model, node.input[0])
    for idx, name in QUANT_PARAMS[node.op_type].items():
        if "bit width" in name:
            continue
        p_shape = _shape(model, node.input[idx])
        if x_shape is None or p_shape is None:
            continue
        try:
            ok = list(np.broadcast_shapes(tuple(x_shape), tuple(p_shape))) == list(x_shape)
        except ValueError:
            ok = False
        if not ok:
            raise ModelError(f"{describe(node)}: the {name} of shape {p_shape} does not broadcast over the "
                             f"quantized tensor of shape {x_shape} (one value, or one per channel)")


def _check_dense(model, node, a: dict, describe) -> None:
    x_shape, w_shape = _shape(model, node.input[0]), _shape(model, node.input[1])
    if x_shape is None or w_shape is None or len(w_shape) != 2:
        return  # the lowering refuses what it cannot read
    trans_b = node.op_type == "Gemm" and a.get("transB", 0)
    k, n = (w_shape[1], w_shape[0]) if trans_b else (w_shape[0], w_shape[1])
    if x_shape[-1] != k:
        raise ModelError(f"{describe(node)}: an input of {x_shape[-1]} features for weights {w_shape}"
                         f"{' (transB)' if trans_b else ''} that take {k}")
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        b_shape = _shape(model, node.input[2])
        if b_shape is not None and int(np.prod(b_shape)) not in (1, n):
            raise ModelError(f"{describe(node)}: bias of shape {b_shape} for {n} outputs")


def check_cleaned(model, source: str, describe) -> None:
    """Attributes against the inferred shapes: what the lowering and verify would trip over."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        for i, name in enumerate(list(node.input) + list(node.output)):
            if not name:
                continue
            if node.op_type == "Resize" and i in (1, 2) and name in inits and _shape(model, name) == [0]:
                continue  # an empty roi or scales constant stands for an absent input (Resize-11 requires them)
            shape = _shape(model, name)
            if shape is None:  # qonnx's execution (verify) refuses unspecified shapes
                raise UnsupportedOpError(f"{describe(node)}: the shape of tensor '{name}' could not be inferred")
            if shape is not None and any((not isinstance(d, int)) or d <= 0 for d in shape):
                raise UnsupportedOpError(f"{describe(node)}: tensor '{name}' has shape {shape}; every dimension "
                                         "must be a known positive size")
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if node.op_type in QUANT_ARITY:
            _check_broadcast(model, node, describe)
        elif node.op_type in ("Gemm", "MatMul"):
            _check_dense(model, node, a, describe)
        if node.op_type != "Conv":
            continue
        x_shape, w_shape = model.get_tensor_shape(node.input[0]), model.get_tensor_shape(node.input[1])
        if x_shape is None or w_shape is None:
            raise UnsupportedOpError(f"{describe(node)}: the input or weight shape could not be inferred")
        if len(w_shape) not in (3, 4) or len(x_shape) != len(w_shape):
            raise UnsupportedOpError(f"{describe(node)}: input {x_shape} and weights {w_shape} of different ranks "
                                     "or a convolution other than 1D or 2D")
        kernel = list(a.get("kernel_shape", w_shape[2:]))
        if kernel != list(w_shape[2:]):
            raise ModelError(f"{describe(node)}: kernel_shape {kernel} contradicts the weights' shape {w_shape}")
        group = int(a.get("group", 1))
        if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
            raise ModelError(f"{describe(node)}: {x_shape[1]} input channels, weights {w_shape} and group {group} "
                             "do not agree")
        if len(node.input) > 2 and node.input[2]:
            b_shape = model.get_tensor_shape(node.input[2])
            if b_shape is not None and list(b_shape) != [w_shape[0]]:
                raise ModelError(f"{describe(node)}: bias of shape {b_shape} for {w_shape[0]} output channels")
