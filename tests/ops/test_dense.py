"""dense: QONNX Gemm/MatMul (after a flatten), TFLite FULLY_CONNECTED; every stage bit-exact with
every kernel variant (DSP dense, Helium dense)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder
from helpers.tflite_layers import fc_layer, flatten

QONNX = [
    QonnxCase.named("dense_per_channel_pow2", kernels=ALL_KERNELS),
    QonnxCase.named("head_flatten_linear", kernels=ALL_KERNELS),
]


def _fc_model(seed: int, shape: tuple, n_out: int, per_channel: bool) -> bytes:
    """FULLY_CONNECTED of an int8 input (reshaped to (1, n) first when it has more axes)."""
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    x = y = b.act((1,) + shape, 0.03, -4)
    n = int(np.prod(shape))
    if len(shape) > 1:
        y, n = flatten(b, x, shape, 0.03, -4)
    return b.build([x], [fc_layer(b, rng, y, n, 0.03, n_out, 70, 0.05, per_channel=per_channel)])


TFLITE = [
    TfliteCase("fc_per_channel", lambda: _fc_model(20, (24,), 7, True), kernels=ALL_KERNELS),
    TfliteCase("fc_per_tensor_after_reshape", lambda: _fc_model(21, (2, 3, 5), 11, False), kernels=ALL_KERNELS),
]


@pytest.mark.parametrize("frontend,variant,case", matrix("dense", QONNX, TFLITE))
def test_dense(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"dense"})
