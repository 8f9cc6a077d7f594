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


def load_tflite(path: str | Path):
    """Read and sanity-check a .tflite file; returns (raw bytes, tflite.Model)."""
    tfl = schema()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); the file may be truncated "
                         "or not a .tflite model: convert it again")
    try:
        model = tfl.Model.GetRootAs(raw, 0)
        n_sub = model.SubgraphsLength()
        sub = model.Subgraphs(0) if n_sub else None
        if sub is not None:  # touch every table once so a truncated file fails here, not mid-lowering
            for i in range(sub.TensorsLength()):
                sub.Tensors(i).ShapeAsNumpy()
            for i in range(sub.OperatorsLength()):
                sub.Operators(i).InputsAsNumpy()
    except Exception as e:  # flatbuffers raises assorted errors on truncated/corrupt data
        raise ModelError(f"{path}: not a readable TFLite flatbuffer ({type(e).__name__}: {e}); the file may be "
                         "truncated or corrupt: convert it again") from None
    if n_sub != 1:
        raise UnsupportedOpError(f"{path}: {n_sub} subgraphs; edgekit imports models with exactly one")
    return raw, model
