"""maxpool and avgpool: QONNX MaxPool, AveragePool (+ Quant or Trunc), GlobalAveragePool; TFLite
MAX_POOL_2D and AVERAGE_POOL_2D (border windows of SAME padding count fewer taps). Pooling has
reference kernels only; a model whose convolution gets an optimized kernel runs that variant too."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite

NO_KERNEL = {v: f"pooling has no {v} kernel and no other layer of this model gets one" for v in ("dsp", "helium")}

QONNX = [
    QonnxCase.named("maxpool_2x2", kernels=ALL_KERNELS, ops=("maxpool",)),
    QonnxCase.named("maxpool_3x3_s2_pad", ops=("maxpool",)),
    QonnxCase.named("maxpool1d", ops=("maxpool",)),
    QonnxCase.named("avgpool_2x2_quant", ops=("avgpool",)),
    QonnxCase.named("avgpool_3x3_quant", ops=("avgpool",)),
    QonnxCase.named("avgpool1d_quant", ops=("avgpool",)),
    QonnxCase.named("trunc_avgpool_2x2", ops=("avgpool",)),
    QonnxCase.named("trunc_avgpool_3x3", ops=("avgpool",)),
    QonnxCase.named("global_avgpool", ops=("avgpool",)),
]


def _pool_model(op: str, shape: tuple, size: int, stride: int, padding: str, act: str = "NONE") -> bytes:
    """One pooling layer of an int8 input; the output keeps the input's quantization."""
    b = TfliteBuilder()
    h, w, c = shape
    x = b.act((1,) + shape, 0.05, -3)
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = b.act((1, oh, ow, c), 0.05, -3)
    b.op(op, [x], [y], "Pool2DOptions", Padding=getattr(tflite.Padding, padding), StrideW=stride, StrideH=stride,
         FilterWidth=size, FilterHeight=size,
         FusedActivationFunction=getattr(tflite.ActivationFunctionType, act))
    return b.build([x], [y])


TFLITE = [
    TfliteCase("max_pool_2x2_s2_same_relu", lambda: _pool_model("MAX_POOL_2D", (9, 11, 5), 2, 2, "SAME", "RELU"),
               ops=("maxpool",)),
    TfliteCase("max_pool_3x3_s1_valid", lambda: _pool_model("MAX_POOL_2D", (7, 6, 3), 3, 1, "VALID"),
               ops=("maxpool",)),
    TfliteCase("average_pool_3x3_s1_same", lambda: _pool_model("AVERAGE_POOL_2D", (6, 7, 4), 3, 1, "SAME"),
               ops=("avgpool",)),
    TfliteCase("average_pool_2x2_s2_valid", lambda: _pool_model("AVERAGE_POOL_2D", (8, 9, 3), 2, 2, "VALID"),
               ops=("avgpool",)),
]


@pytest.mark.parametrize("frontend,variant,case", matrix("pooling", QONNX, TFLITE, NO_KERNEL))
def test_pool(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, set())
