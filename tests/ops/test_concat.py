"""concat: QONNX Concat of two branches that share one output quantizer."""
from __future__ import annotations

import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, check, matrix

QONNX = [QonnxCase.named("concat", kernels=ALL_KERNELS)]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "concat", QONNX, [], no_tflite="edgekit's TFLite import has no CONCATENATION lowering"))
def test_concat(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"concat"})
