"""QDQ ONNX import: a float CNN quantized with onnxruntime's quantize_static (QuantizeLinear/
DequantizeLinear around float operators) builds, and every stage verifies bit for bit against
the simulator; onnxruntime's own execution of the QDQ file is compared and reported."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekit.api import build, verify
from edgekit.errors import EdgekitError
from edgekit.ir.graph import Graph
from edgekit.sim import quantize_input, simulate


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def float_cnn_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qdq") / "float_cnn.onnx"
    # a symbolic batch dimension, as most exported files have
    torch.onnx.export(SmallCnn().eval(), torch.zeros(1, 1, 8, 8), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def quantize_qdq(float_path, out_path, calibration, per_channel: bool):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out_path


def onnxruntime_codes(qdq_path, x, scale, zero_point) -> np.ndarray:
    """onnxruntime's execution of the QDQ file, back to output codes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(qdq_path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
    return np.rint(y / scale + zero_point).astype(np.int64)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_onnxruntime_qdq_model_builds_and_verifies(per_channel, float_cnn_onnx, calibration, tmp_path):
    qdq = quantize_qdq(float_cnn_onnx, tmp_path / "qdq.onnx", calibration, per_channel)
    ops = {n.op_type for n in onnx.load(str(qdq)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Quant" not in ops

    res = build(qdq, "cortex-m4", "mps2-an386", tmp_path / "out")
    cleaned = onnx.load(str(res.out_dir / "model.onnx"))
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in cleaned.graph.node}

    x = np.random.default_rng(1).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    rep = verify(res.out_dir, inputs=x)
    assert rep.ok, rep.table()
    stages = {s["stage"]: s for s in rep.to_json()["stages"]}
    assert stages["host C"]["mismatches"] == 0 and stages["firmware (mps2-an386)"]["mismatches"] == 0
    assert stages["qonnx (float32)"]["max_lsb"] <= 1  # float scales: qonnx rounds in float32

    graph = Graph.load(res.out_dir)
    codes = simulate(graph, quantize_input(graph, x))[graph.outputs[0]].reshape(len(x), -1)
    out = graph.tensors[graph.outputs[0]]
    ort_codes = onnxruntime_codes(qdq, x, out.scale[0], out.zero_point)
    diff = np.abs(ort_codes - codes)
    agree = float((ort_codes.argmax(1) == codes.argmax(1)).mean())
    print(f"\nonnxruntime QDQ vs edgekit ({'per-channel' if per_channel else 'per-tensor'}): "
          f"{(diff == 0).mean():.1%} of outputs equal, max {diff.max()} LSB, argmax agreement {agree:.1%}")
    # onnxruntime runs integer kernels with float requantization; edgekit rounds once per
    # layer with Q31 multipliers, so the two may differ by an LSB per layer
    assert diff.max() <= 1 and agree >= 0.95


def test_qoperator_format_is_refused(float_cnn_onnx, calibration, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calibration[:16]}])

        def get_next(self):
            return next(self.batches, None)

    path = tmp_path / "qop.onnx"
    quantize_static(str(float_cnn_onnx), str(path), Reader(), quant_format=QuantFormat.QOperator)
    with pytest.raises(EdgekitError, match="QOperator format is not supported; quantize with quant_format=QuantF"):
        build(path, "cortex-m4", "mps2-an386", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unpaired_quantizelinear_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    # a QuantizeLinear whose codes are the graph output: no DequantizeLinear to pair with
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="lonely_q")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [1, 4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(EdgekitError, match="node 'lonely_q' \\(QuantizeLinear\\) is not part of a QuantizeLinear"):
        build(path, "cortex-m4", "mps2-an386", tmp_path / "out")
