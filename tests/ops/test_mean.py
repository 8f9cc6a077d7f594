"""MEAN (TFLite; Keras' GlobalAveragePooling2D/1D and means over rows), lowered to a depthwise
convolution with equal weights: every stage bit-exact with TFLite Micro, and the refusal of a mean
over channels."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.opcheck import ALL_KERNELS, TfliteCase, check, matrix
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.tflite_layers import conv_layer, fc_layer
from helpers.tflm import NOT_INSTALLED, run_tflm, tflm_runtime


def _mean_model(variant: str, seed: int = 4) -> bytes:
    """MEAN over the spatial axes (Keras' GlobalAveragePooling2D/1D) between a conv and a dense layer.
    "keep": axes (1, 2), keep_dims (then RESHAPE); "drop": axes (-3, -2), no keep_dims; "1d": a
    (1, 20, 8) input, axis 1; "rows": axis 1 only of a 4-D map (a mean over rows)."""
    A = tflite.ActivationFunctionType
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    if variant == "1d":
        x = b.act((1, 20, 8), 0.05, 3)
        y, shp, s = x, (20, 8), 0.05
    else:
        x = b.act((1, 7, 6, 3), 0.03, -5)
        y, shp, s, _ = conv_layer(b, rng, x, (7, 6, 3), 0.03, 8, 3, 1, "SAME", A.RELU, x_rms=45)
    zp = int(b.tensors[y]["zp"][0]) if variant != "1d" else 3
    axes = {"keep": [1, 2], "drop": [-3, -2], "1d": [1], "rows": [1]}[variant]
    c = shp[-1]
    out_shape = {"keep": (1, 1, 1, c), "drop": (1, c), "1d": (1, c), "rows": (1, shp[1], c)}[variant]
    m_scale = s * 0.37  # the mean spreads less than its input: a finer scale
    m = b.act(out_shape, m_scale, zp + 7)
    b.op("MEAN", [y, b.tensor((len(axes),), "int32", data=axes)], [m], "ReducerOptions",
         KeepDims=variant in ("keep", "rows"))
    n = int(np.prod(out_shape[1:]))
    if len(out_shape) != 2:
        flat = b.act((1, n), m_scale, zp + 7)
        b.op("RESHAPE", [m, b.tensor((2,), "int32", data=[1, n])], [flat], "ReshapeOptions")
        m = flat
    logits = fc_layer(b, rng, m, n, m_scale, 5, 12, 0.05, -3, per_channel=False)
    return b.build([x], [logits])


VARIANTS = ("keep", "drop", "1d", "rows")
# the mean's depthwise convolution runs the Helium depthwise kernel (mve_dw) on the M55
TFLITE = [TfliteCase(f"mean_{v}", lambda v=v: _mean_model(v), kernels=ALL_KERNELS) for v in VARIANTS]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "mean", [], TFLITE,
    no_qonnx="QONNX models average with GlobalAveragePool/AveragePool (tests/ops/test_pool.py), not MEAN"))
def test_mean(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"conv2d"})


@pytest.mark.parametrize("variant", VARIANTS)
def test_mean_is_a_depthwise_conv_and_does_not_saturate(variant, tmp_path, rng):
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes

    from helpers.codes import input_codes

    path = tmp_path / "mean.tflite"
    path.write_bytes(_mean_model(variant))
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    assert any(n.op == "conv2d" and n.attrs["depthwise"] and n.name.startswith("mean") for n in graph.nodes)
    if tflm_runtime() is None:
        pytest.skip(NOT_INSTALLED)
    want = run_tflm(path.read_bytes(), input_codes(rng, graph.tensors[graph.inputs[0]].shape, 48))
    assert len(np.unique(want)) > 20, "the test model saturates"


def test_mean_over_channels_is_refused(tmp_path):
    from edgekit.errors import UnsupportedOpError
    from edgekit.frontends.tflite.importer import import_tflite

    b = TfliteBuilder()
    x, y = b.act((1, 4, 4, 3), 0.1, 0), b.act((1, 4, 4), 0.1, 0)
    b.op("MEAN", [x, b.tensor((1,), "int32", data=[3])], [y], "ReducerOptions", KeepDims=False)
    (tmp_path / "m.tflite").write_bytes(b.build([x], [y]))
    with pytest.raises(UnsupportedOpError, match=r"operator 0 \(MEAN\): mean over axes \[3\]"):
        import_tflite(tmp_path / "m.tflite")


