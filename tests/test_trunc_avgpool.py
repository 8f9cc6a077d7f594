"""TruncAvgPool whose output is wider than the pooled sum (issue 17, bug 3).

qonnx's Trunc (trunc_v2, a port of Brevitas' TruncIntQuant) divides round(x / scale) by
2^round(log2(out_scale / scale)); when the output is wider that power of two is below 1 and
multiplies the sum. The lowering used to truncate it to the integer 0 and divide by zero.
"""
from __future__ import annotations

import brevitas.nn as qnn
import pytest
import torch

from edgekit.api import build, verify
from edgekit.ir.graph import Graph
from edgekit.qat import export_qonnx

from helpers.brevitas_models import U, Seq
from helpers.calibration import calibrate


@pytest.mark.parametrize("kernel, stride, in_bits, out_bits", [(1, 2, 3, 6), (2, 2, 3, 8), (3, 1, 4, 8)])
def test_widening_trunc_avgpool_bit_exact(kernel, stride, in_bits, out_bits, tmp_path):
    torch.manual_seed(1)
    model = calibrate(Seq(qnn.QuantReLU(act_quant=U, bit_width=in_bits, return_quant_tensor=True),
                          qnn.TruncAvgPool2d(kernel, stride=stride, bit_width=out_bits, return_quant_tensor=True)),
                      (2, 7, 7))
    onnx_path = export_qonnx(model, torch.zeros(1, 2, 7, 7), tmp_path / "trunc.onnx")
    build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
    pool = next(n for n in Graph.load(tmp_path / "b").nodes if n.op == "avgpool")
    assert pool.attrs["den"] >= 1 and pool.attrs["num"] >= 1
    rep = verify(tmp_path / "b", count=64, seed=5)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages if s.must_be_exact), rep.table()
    qonnx = next(s for s in rep.stages if s.stage.startswith("qonnx"))
    if kernel * kernel in (1, 4):  # power-of-two scales throughout: exact against qonnx as well
        assert qonnx.must_be_exact and qonnx.mismatches == 0, rep.table()
    else:  # the 1/9 of a 3x3 window is a float scale: qonnx rounds in float32
        assert qonnx.max_lsb <= 1, rep.table()
