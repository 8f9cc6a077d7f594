"""Reading a .tflite flatbuffer: the schema classes, tensors with their quantization and data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ModelError, UnsupportedOpError


def schema():
    try:
        import tflite
    except ImportError:  # a dependency of edgekit; only a broken installation lacks it
        raise ModelError("reading .tflite files needs the 'tflite' package (pip install tflite)") from None
    return tflite


def enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


class TfTensor:
    """One tensor of the subgraph: shape, type, quantization and (for constants) data."""

    def __init__(self, model, sub, index: int, raw: bytes, type_names: dict[int, str]):
        t = sub.Tensors(index)
        self.index = index
        self.name = (t.Name() or b"").decode("utf-8", "replace")
        self.type = type_names.get(t.Type(), str(t.Type()))
        self.shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        q = t.Quantization()
        self.scale = np.asarray(q.ScaleAsNumpy(), np.float32) if q is not None and q.ScaleLength() else None
        self.zero_point = np.asarray(q.ZeroPointAsNumpy(), np.int64) if q is not None and q.ZeroPointLength() \
            else None
        self.quantized_dimension = q.QuantizedDimension() if q is not None else 0
        self.data = None
        b = t.Buffer()
        if 0 < b < model.BuffersLength():
            buf = model.Buffers(b)
            if buf.DataLength():
                self.data = buf.DataAsNumpy().tobytes()
            elif buf.Offset() > 1:  # large models keep buffers after the flatbuffer
                self.data = raw[buf.Offset():buf.Offset() + buf.Size()]

    def array(self) -> np.ndarray:
        dtypes = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "INT16": np.int16,
                  "FLOAT32": np.float32}
        arr = np.frombuffer(self.data, dtype=np.dtype(dtypes[self.type]).newbyteorder("<"))
        return arr.reshape(self.shape) if self.shape else arr

    @property
    def per_sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]


MAX_TFLITE_BYTES = 256 << 20  # no Cortex-M flash holds more than a few MiB


def load_tflite(path: str | Path):
    """Read and sanity-check a .tflite file; returns (raw bytes, tflite.Model).

    Every table, vector and index the import reads is checked here once, so that a truncated
    or corrupted file (offsets pointing past the end, indices out of range, buffers shorter
    than their tensors) ends in one ModelError instead of failing mid-lowering."""
    tfl = schema()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a regular file (a directory, device or pipe); give the model file")
    size = path.stat().st_size
    if size > MAX_TFLITE_BYTES:
        raise ModelError(f"{path}: {size} bytes; edgekit reads model files of at most {MAX_TFLITE_BYTES >> 20} MiB")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); the file may be truncated "
                         "or not a .tflite model: convert it again")
    try:
        model = tfl.Model.GetRootAs(raw, 0)
        n_sub = model.SubgraphsLength()
        sub = model.Subgraphs(0) if n_sub else None
        if sub is not None:  # touch every table once so a truncated file fails here, not mid-lowering
            problem = _check_flatbuffer(tfl, model, sub, raw)
        else:
            problem = None
    except Exception as e:  # flatbuffers raises assorted errors on truncated/corrupt data
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelError(f"{path}: not a readable TFLite flatbuffer ({type(e).__name__}: {first}); the file may be "
                         "truncated or corrupt: convert it again") from None
    if problem:
        raise ModelError(f"{path}: corrupt TFLite flatbuffer: {problem}; convert it again")
    if n_sub != 1:
        raise UnsupportedOpError(f"{path}: {n_sub} subgraphs; edgekit imports models with exactly one")
    return raw, model


def _check_table(tab, size: int) -> None:
    """The vtable of a flatbuffer table and every field it points at lie inside the buffer."""
    from flatbuffers import encode, number_types as N

    if not 0 <= tab.Pos <= size - 4:
        raise IndexError(f"table at {tab.Pos}")
    vtable = tab.Pos - encode.Get(N.SOffsetTFlags.packer_type, tab.Bytes, tab.Pos)
    if not 0 <= vtable <= size - 4:
        raise IndexError(f"vtable at {vtable}")
    vsize = encode.Get(N.VOffsetTFlags.packer_type, tab.Bytes, vtable)
    if vsize < 4 or vtable + vsize > size:
        raise IndexError(f"vtable of {vsize} bytes at {vtable}")
    for slot in range(4, vsize - 1, 2):
        off = encode.Get(N.VOffsetTFlags.packer_type, tab.Bytes, vtable + slot)
        if off and tab.Pos + off >= size:  # scalars may be 1 byte wide: at least one byte inside
            raise IndexError(f"field at {tab.Pos + off}")


def _check_flatbuffer(tfl, model, sub, raw: bytes) -> str | None:
    """What the import reads, read once: a description of the first problem, or None."""
    size = len(raw)
    type_names = enum_names(tfl.TensorType)
    n_tensors, n_codes = sub.TensorsLength(), model.OperatorCodesLength()
    itemsize = {"INT8": 1, "UINT8": 1, "INT16": 2, "INT32": 4, "INT64": 8, "FLOAT32": 4}
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        _check_table(code._tab, size)
        code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.CustomCode()
    for i in range(n_tensors):
        t = sub.Tensors(i)
        _check_table(t._tab, size)
        tensor = TfTensor(model, sub, i, raw, type_names)
        if any(d < 0 for d in tensor.shape):
            return f"tensor {i} has shape {list(tensor.shape)}"
        if tensor.data is not None and tensor.type in itemsize:
            expected = int(np.prod(tensor.shape, dtype=np.int64)) * itemsize[tensor.type]  # shape (): a scalar
            if len(tensor.data) != expected:
                return f"tensor {i} ('{tensor.name}') has {len(tensor.data)} bytes of data for shape {list(tensor.shape)}"
        if tensor.scale is not None and not np.all(np.isfinite(tensor.scale)):
            return f"tensor {i} ('{tensor.name}') has a non-finite scale"
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        _check_table(op._tab, size)
        if not 0 <= op.OpcodeIndex() < n_codes:
            return f"operator {i} has opcode index {op.OpcodeIndex()} of {n_codes}"
        for k in list(op.InputsAsNumpy()) + list(op.OutputsAsNumpy()) if op.InputsLength() or op.OutputsLength() \
                else []:
            if not -1 <= int(k) < n_tensors:
                return f"operator {i} refers to tensor {int(k)} of {n_tensors}"
        op.BuiltinOptionsType()
        options = op.BuiltinOptions()
        if options is not None:
            _check_table(options, size)
    for k in (list(sub.InputsAsNumpy()) if sub.InputsLength() else []) + \
            (list(sub.OutputsAsNumpy()) if sub.OutputsLength() else []):
        if not 0 <= int(k) < n_tensors:
            return f"the subgraph's input or output is tensor {int(k)} of {n_tensors}"
    return None
