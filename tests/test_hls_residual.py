"""Residual adds (a fork whose branches meet again in an add) through the FPGA backend.

hls4ml's QONNX path refuses them (its channels-last conversion does not move transposes through
forks), so the FPGA backend builds them from edgekit's integer IR: the IR's residual add, both
operands requantized onto a common scale and the int32 sum onto the output grid (edgekit/ops/add.py),
is the extension layer ``EdgekitAdd`` (templates/hls/nnet_edgekit.h), in io_parallel and io_stream.
"""
from __future__ import annotations

import shutil

import brevitas.nn as qnn
import pytest
import torch
from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias
from torch import nn

from edgekit.api import build, verify
from edgekit.ir.graph import Graph
from edgekit.qat import export_qonnx
from helpers.brevitas_models import A, U, qid
from helpers.calibration import calibrate

hls4ml = pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C-simulation needs g++")


class ResidualMLP(nn.Module):
    """x -> dense -> ReLU -> dense, added to x (the skip) -> dense: a ResNet block of dense layers,
    the operands and the sum on different power-of-two scales."""

    def __init__(self, n=8):
        super().__init__()
        w = Int8WeightPerTensorFixedPoint
        self.inp = qid()
        self.fc1 = qnn.QuantLinear(n, n, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.r1 = qnn.QuantReLU(act_quant=U, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(n, n, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.q2 = qid()
        self.qs = qid()
        self.fc3 = qnn.QuantLinear(n, 3, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        y = self.q2(self.fc2(self.r1(self.fc1(x))))
        return self.out(self.fc3(self.qs(x.value + y.value)))


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_residual_dense_block_csim_is_exact(io_type, tmp_path):
    torch.manual_seed(0)
    model = calibrate(ResidualMLP(), (8,), passes=8, batch=32, spread=1.5)
    onnx = export_qonnx(model, torch.zeros(1, 8), tmp_path / "residual.onnx")
    out = tmp_path / "b"
    m = build(onnx, "fpga", "pynq-z2", out, io_type=io_type).manifest
    assert m.layout["inputs"] == "codes" and m.hls["io_type"] == io_type
    assert [n.op for n in Graph.load(out).nodes] == ["dense", "dense", "add", "dense"]
    cpp = (out / "hls" / "firmware" / "edgekit_model.cpp").read_text()
    assert cpp.count("nnet::ek_add<") == 1, cpp
    rep = verify(out, count=64, seed=1)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    csim = stages["hls4ml"]
    assert csim.must_be_exact and csim.elements == 64 * 3 and csim.mismatches == 0, rep.table()
    assert stages["qonnx"].must_be_exact and stages["qonnx"].mismatches == 0, rep.table()
    assert rep.ok, rep.table()
