"""Published QONNX files and forks through the FPGA backend (hls4ml), verified bit for bit.

The QONNX model zoo's files (FINN's TFC_2W2A, finn-examples' KWS MLP and UNSW-NB15 MLP) hold
float BatchNorms followed by low-bit quantizers, float pre-processing and float, per-channel
scales: hls4ml 1.3's QONNX path either fails on them or computes them in fixed point. The FPGA
backend builds them from edgekit's integer IR instead (edgekit/backends/hls/integer_path.py), so
hls4ml's C-simulation must equal the simulator code for code, whatever the scales. A graph with a
fork (one tensor read by two layers) takes the same path.
"""
from __future__ import annotations

import shutil

import brevitas.nn as qnn
import pytest
import torch
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, \
    SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from torch import nn

from edgekit.api import build, verify
from edgekit.bench import peers_dir
from edgekit.qat import export_qonnx
from helpers.brevitas_models import qid
from helpers.calibration import calibrate

hls4ml = pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C-simulation needs g++")

ZOO = (peers_dir() / "qonnx_zoo") if peers_dir() is not None else None
# file -> the reuse factor that fits a PYNQ-Z2 by the estimate (the one `edgekit build` names),
# whether qonnx's float execution is exact for it (power-of-two scales, BatchNorm as thresholds),
# and its threshold and requantization layers (UNSW-NB15: a float-scale first layer, a bipolar output)
FILES = {"TFC_2W2A.onnx": (16, True, 3, 0), "kwsmlp_w3a3.onnx": (245, False, 3, 0),
         "unsw_nb15-mlp-w2a2.onnx": (16, False, 2, 2)}


@pytest.mark.skipif(ZOO is None or not ZOO.is_dir(), reason="../shared/peers/qonnx_zoo is not present")
@pytest.mark.parametrize("name", sorted(FILES))
def test_zoo_file_builds_for_pynq_z2_and_csim_is_exact(name, tmp_path):
    reuse, qonnx_exact, thresholds, requants = FILES[name]
    out = tmp_path / "b"
    res = build(ZOO / name, "fpga", "pynq-z2", out, reuse_factor=reuse)
    m = res.manifest
    assert m.fits and m.layout["inputs"] == "codes" and m.precision["exact"]
    # every BatchNorm + low-bit quantizer became a threshold layer with integer thresholds
    assert sum("thresholds_t" in types for types in m.hls_types.values()) == thresholds, m.hls_types
    assert sum("multiplier_t" in types for types in m.hls_types.values()) == requants, m.hls_types
    rep = verify(out, count=32, seed=5)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    csim = stages["hls4ml"]
    assert csim.must_be_exact and csim.elements > 0 and csim.mismatches == 0, rep.table()
    q = stages["qonnx"]
    assert q.elements > 0 and q.must_be_exact == qonnx_exact, rep.table()
    if qonnx_exact:
        assert q.mismatches == 0, rep.table()
    assert rep.ok, rep.table()


class ForkConcat(nn.Module):
    """x feeds two dense layers (a fork), their outputs are concatenated, a third layer reads that."""

    def __init__(self):
        super().__init__()
        w = Int8WeightPerTensorFixedPoint
        self.inp = qid()
        self.a = qnn.QuantLinear(8, 4, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.b = qnn.QuantLinear(8, 6, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.q = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.c = qnn.QuantLinear(10, 3, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        y = torch.cat([self.q(self.a(x)).value, self.q(self.b(x)).value], dim=1)
        return self.out(self.c(self.q(y)))


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_fork_builds_and_csim_is_exact(io_type, tmp_path):
    torch.manual_seed(0)
    model = calibrate(ForkConcat(), (8,), passes=8, batch=32, spread=1.5)
    onnx = export_qonnx(model, torch.zeros(1, 8), tmp_path / "fork.onnx")
    out = tmp_path / "b"
    m = build(onnx, "fpga", "pynq-z2", out, io_type=io_type).manifest
    assert m.layout["inputs"] == "codes" and m.hls["io_type"] == io_type
    if io_type == "io_stream":  # hls4ml's stream flow copies the forked stream for its two readers
        assert "clone_stream" in (out / "hls" / "firmware" / "edgekit_model.cpp").read_text()
    rep = verify(out, count=64, seed=2)
    csim = next(s for s in rep.stages if s.stage.startswith("hls4ml"))
    assert csim.must_be_exact and csim.elements == 64 * 3 and csim.mismatches == 0, rep.table()
    assert rep.ok, rep.table()


class BinaryHidden(nn.Module):
    """8-bit input -> binary-weight dense -> BatchNorm -> binary (+-1) activation -> binary-weight dense."""

    def __init__(self):
        super().__init__()
        w, a = SignedBinaryWeightPerTensorConst, SignedBinaryActPerTensorConst
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(32, 16, bias=False, weight_quant=w, return_quant_tensor=False)
        self.bn = nn.BatchNorm1d(16)
        self.act = qnn.QuantIdentity(act_quant=a, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(16, 4, bias=False, weight_quant=w, return_quant_tensor=True)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        return self.out(self.fc2(self.act(self.bn(self.fc1(self.inp(x))))))


def test_binary_weights_and_activations_csim_is_exact(tmp_path):
    torch.manual_seed(0)
    model = BinaryHidden().train()
    with torch.no_grad():  # BatchNorm statistics that put the thresholds inside the accumulator's range
        for _ in range(4):
            model(torch.randn(64, 32))
    onnx = export_qonnx(model.eval(), torch.zeros(1, 32), tmp_path / "binary.onnx")
    out = tmp_path / "b"
    m = build(onnx, "fpga", "pynq-z2", out).manifest
    assert sum("thresholds_t" in types for types in m.hls_types.values()) == 1, m.hls_types
    # hls4ml's XNOR types: +-x on the 8-bit input, XNOR-popcount on the binary activation
    assert [(lp["weight"], lp["product"].split(" ")[0]) for lp in m.precision["layers"]] == \
        [("xnor<1>", "weight_binary"), ("xnor<1>", "both_binary")], m.precision
    rep = verify(out, count=64, seed=4)
    csim = next(s for s in rep.stages if s.stage.startswith("hls4ml"))
    assert csim.must_be_exact and csim.elements == 64 * 4 and csim.mismatches == 0, rep.table()
    assert rep.ok, rep.table()
