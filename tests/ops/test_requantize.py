"""requantize: a standalone rescale between quantizers (QONNX Quant after Quant, TFLite int8 -> int8
QUANTIZE); it also follows non-accumulating layers such as concat and max pooling."""
from __future__ import annotations

import pytest

from helpers.brevitas_models import U, Seq, qid
from helpers.opcheck import QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite


def _quantize_model(scale_ratio: float, zp_shift: int) -> bytes:
    """max pool 2x2/2 SAME, then QUANTIZE to another scale and zero point."""
    b = TfliteBuilder()
    x, p = b.act((1, 6, 7, 4), 0.04, 3), b.act((1, 3, 4, 4), 0.04, 3)
    b.op("MAX_POOL_2D", [x], [p], "Pool2DOptions", Padding=tflite.Padding.SAME, StrideW=2, StrideH=2,
         FilterWidth=2, FilterHeight=2, FusedActivationFunction=tflite.ActivationFunctionType.NONE)
    y = b.act((1, 3, 4, 4), 0.04 * scale_ratio, 3 + zp_shift)
    b.op("QUANTIZE", [p], [y])
    return b.build([x], [y])


QONNX = [QonnxCase("int8_to_uint8_quant", lambda: Seq(qid(U)), (3, 5, 5))]

TFLITE = [
    TfliteCase("quantize_coarser", lambda: _quantize_model(1.37, 4)),
    TfliteCase("quantize_finer", lambda: _quantize_model(0.61, -9)),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "requantize", QONNX, TFLITE, {v: f"requantize has no {v} kernel and no other layer of this model gets one"
                                  for v in ("dsp", "helium")}))
def test_requantize(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"requantize"})
