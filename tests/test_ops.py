"""Every operator: export a tiny Brevitas model using it, build, and verify every stage.

``verify`` compares element by element, so a single 1-LSB difference between the
simulator and qonnx (where the contract promises exactness), the host C or the
firmware fails these tests.
"""
from __future__ import annotations

import zlib

import pytest
import torch

from edgekit.api import build, verify
from edgekit.ir.graph import Graph
from edgekit.qat import export_qonnx

from opmodels import calibrate, op_models

MODELS = op_models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_operator_bit_exact(name, tmp_path):
    factory, shape, exact_vs_qonnx = MODELS[name]
    torch.manual_seed(zlib.crc32(name.encode()) % 1000)  # str hash() changes per process
    model = calibrate(factory(), shape)
    onnx_path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / f"{name}.onnx")
    build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
    rep = verify(tmp_path / "b", count=96, seed=2)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    assert stages["host"].mismatches == 0 and stages["firmware"].mismatches == 0, rep.table()
    q = stages["qonnx"]
    if exact_vs_qonnx:
        assert q.must_be_exact and q.mismatches == 0, rep.table()
    else:
        assert not q.must_be_exact and q.max_lsb <= 2, rep.table()
    assert rep.ok
    ops = {n.op for n in Graph.load(tmp_path / "b").nodes}
    assert ops, "empty graph"
