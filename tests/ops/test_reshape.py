"""reshape: flattens and transposes (QONNX Flatten/Reshape, a channels-last permute before a
flatten; TFLite RESHAPE, SQUEEZE, EXPAND_DIMS and Keras 3's Flatten, whose int32 shape arithmetic SHAPE ->
STRIDED_SLICE -> PACK is evaluated at import)."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite

QONNX = [
    QonnxCase.named("transpose_flatten_2d", kernels=ALL_KERNELS),
    QonnxCase.named("transpose_flatten_1d", kernels=ALL_KERNELS),
]


def _flatten_model(ellipsis: int = 0, new_dim: int = -1, shape_into_add: bool = False) -> bytes:
    """max pool -> x (1, 2, 2, 3) -> RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x)), new_dim)) -> (1, 12), as
    Keras 3 exports a Flatten."""
    b = TfliteBuilder()
    inp, x = b.act((1, 2, 2, 3), 0.1, 0), b.act((1, 2, 2, 3), 0.1, 0)
    b.op("MAX_POOL_2D", [inp], [x], "Pool2DOptions", Padding=tflite.Padding.SAME, StrideW=1, StrideH=1,
         FilterWidth=2, FilterHeight=2, FusedActivationFunction=0)
    shape = b.tensor((4,), "int32")
    b.op("SHAPE", [x], [shape], "ShapeOptions", OutType=tflite.TensorType.INT32)
    batch = b.tensor((), "int32")
    b.op("STRIDED_SLICE", [shape] + [b.tensor((1,), "int32", data=[v]) for v in (0, 1, 1)], [batch],
         "StridedSliceOptions", BeginMask=0, EndMask=0, EllipsisMask=ellipsis, NewAxisMask=0, ShrinkAxisMask=1)
    new_shape = b.tensor((2,), "int32")
    b.op("PACK", [batch, b.tensor((), "int32", data=[new_dim])], [new_shape], "PackOptions", ValuesCount=2, Axis=0)
    y = b.act((1, 12), 0.1, 0)
    b.op("RESHAPE", [x, new_shape], [y], "ReshapeOptions")
    if shape_into_add:  # an int8 operator fed by the shape arithmetic
        z = b.act((1, 12), 0.1, 0)
        b.op("ADD", [y, batch], [z], "AddOptions", FusedActivationFunction=0)
        y = z
    return b.build([inp], [y])


def test_keras3_flatten_shape_arithmetic_folds_at_import(tmp_path):
    from edgekit.errors import ModelError, UnsupportedOpError
    from edgekit.frontends.tflite.importer import import_tflite

    path = tmp_path / "flat.tflite"
    path.write_bytes(_flatten_model())
    graph, _ = import_tflite(path)
    assert [n.op for n in graph.nodes] == ["maxpool", "reshape"] and graph.tensors[graph.outputs[0]].shape == (12,)
    path.write_bytes(_flatten_model(new_dim=5))
    with pytest.raises(ModelError, match=r"operator 4 \(RESHAPE\): new shape \[1, 5\] does not match"):
        import_tflite(path)
    path.write_bytes(_flatten_model(ellipsis=1))
    with pytest.raises(UnsupportedOpError, match=r"operator 2 \(STRIDED_SLICE\): ellipsis"):
        import_tflite(path)
    path.write_bytes(_flatten_model(shape_into_add=True))
    with pytest.raises(UnsupportedOpError, match=r"operator 5 \(ADD\).*shape arithmetic"):
        import_tflite(path)


def _squeeze_model() -> bytes:
    """global average pool (1, 5, 4, 6) -> (1, 1, 1, 6), SQUEEZE of axes 1 and 2 to (1, 6)."""
    b = TfliteBuilder()
    x, p, y = b.act((1, 5, 4, 6), 0.05, 1), b.act((1, 1, 1, 6), 0.05, 1), b.act((1, 6), 0.05, 1)
    b.op("AVERAGE_POOL_2D", [x], [p], "Pool2DOptions", Padding=tflite.Padding.VALID, StrideW=4, StrideH=5,
         FilterWidth=4, FilterHeight=5, FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    b.op("SQUEEZE", [p], [y], "SqueezeOptions", SqueezeDims=[1, 2])
    return b.build([x], [y])


def _expand_dims_model(axis: int = 2) -> bytes:
    """Keras' MaxPooling1D as the TFLite converter writes it: (1, 10, 6) -> EXPAND_DIMS(axis 2) ->
    (1, 10, 1, 6) -> MAX_POOL_2D 2x1 -> (1, 5, 1, 6) -> SQUEEZE(2) -> (1, 5, 6)."""
    b = TfliteBuilder()
    x, e = b.act((1, 10, 6), 0.05, -3), b.act((1, 10, 1, 6), 0.05, -3)
    p, y = b.act((1, 5, 1, 6), 0.05, -3), b.act((1, 5, 6), 0.05, -3)
    b.op("EXPAND_DIMS", [x, b.tensor((1,), "int32", data=[axis])], [e], "ExpandDimsOptions")
    b.op("MAX_POOL_2D", [e], [p], "Pool2DOptions", Padding=tflite.Padding.VALID, StrideW=1, StrideH=2,
         FilterWidth=1, FilterHeight=2, FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    b.op("SQUEEZE", [p], [y], "SqueezeOptions", SqueezeDims=[2])
    return b.build([x], [y])


def test_expand_dims_axis_must_give_the_output_shape(tmp_path):
    from edgekit.errors import ModelError
    from edgekit.frontends.tflite.importer import import_tflite

    path = tmp_path / "expand.tflite"
    path.write_bytes(_expand_dims_model())
    graph, _ = import_tflite(path)
    assert [n.op for n in graph.nodes] == ["reshape", "maxpool", "reshape"]
    path.write_bytes(_expand_dims_model(axis=1))
    with pytest.raises(ModelError, match=r"operator 0 \(EXPAND_DIMS\): inserting axis 1 into \[1, 10, 6\] gives "
                       r"\[1, 1, 10, 6\], not the output tensor's shape \[1, 10, 1, 6\]"):
        import_tflite(path)


TFLITE = [TfliteCase("keras3_flatten", _flatten_model),
          TfliteCase("squeeze_after_global_pool", _squeeze_model),
          TfliteCase("expand_dims_pool_squeeze", _expand_dims_model)]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "reshape", QONNX, TFLITE, {v: f"reshape has no {v} kernel and no other layer of this model gets one"
                               for v in ("dsp", "helium")}))
def test_reshape(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"reshape"})
