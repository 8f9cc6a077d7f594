"""Published QONNX files (qonnx model zoo, finn-examples) build for a Cortex-M board and verify.

The files in ../shared/peers/qonnx_zoo/ are used unchanged: legacy ``onnx.brevitas`` domain,
opsets 9 to 14, float pre-processing, BatchNorm (also as Sub/Div/Mul/Add), float biases,
a BIPOLAR-annotated input and a BipolarQuant output. Every stage the integer contract makes
exact (simulator, host C, QEMU firmware) must show 0 mismatches; the qonnx stage is reported:
these models fold BatchNorm or float biases with rounding or have float scales, so qonnx's
float execution is not bit-exact with any integer implementation of them (docs/limits.md).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from edgekit.api import build, verify
from edgekit.bench import peers_dir
from edgekit.ir.graph import Graph

ZOO = (peers_dir() / "qonnx_zoo") if peers_dir() is not None else None

# file -> (IR ops the graph must hold, input annotation, output post-ops)
FILES = {
    "TFC_2W2A.onnx": ({"dense", "threshold"}, "", ["sub", "div", "mul", "add"]),
    "kwsmlp_w3a3.onnx": ({"dense", "threshold"}, "", []),
    "unsw_nb15-mlp-w2a2.onnx": ({"dense", "threshold"}, "BIPOLAR", []),
}


@pytest.mark.skipif(ZOO is None or not ZOO.is_dir(), reason="../shared/peers/qonnx_zoo is not present")
@pytest.mark.parametrize("name", sorted(FILES))
def test_published_file_builds_and_verifies(name, tmp_path):
    ops, annotation, post_ops = FILES[name]
    out = tmp_path / "b"
    build(ZOO / name, "cortex-m4", "mps2-an386", out)
    graph = Graph.load(out)
    assert ops <= {n.op for n in graph.nodes}
    assert graph.input_quant.annotation == annotation
    assert [step for step, _ in graph.meta["output_post_ops"]] == post_ops
    rep = verify(out, count=48, seed=3)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for stage in ("host", "firmware"):
        assert stages[stage].must_be_exact and stages[stage].elements > 0, rep.table()
        assert stages[stage].mismatches == 0, rep.table()
    q = stages["qonnx"]
    assert q.elements > 0, rep.table()
    if name == "TFC_2W2A.onnx":  # power-of-two scales, BatchNorm as thresholds: qonnx is the reference
        assert q.must_be_exact and q.mismatches == 0, rep.table()
    else:  # float scales (and for UNSW-NB15 float biases): reported, not exact
        assert not q.must_be_exact and q.note, rep.table()
    assert rep.ok, rep.table()


def test_old_float_export_is_called_a_float_model(tmp_path):
    """An old PyTorch export (opset 9, weights listed as graph inputs): 'a float model', whatever its input count."""
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5)).eval()
    path = tmp_path / "float.onnx"
    torch.onnx.export(net, torch.zeros(1, 12), str(path), dynamo=False, opset_version=9,
                      keep_initializers_as_inputs=True)
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(path), "--target", "cortex-m4",
                           "--board", "mps2-an386", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error:") and "this is a float model" in proc.stderr, proc.stderr
    assert "quantize it with" in proc.stderr


@pytest.mark.parametrize("op_type,needle", [("FloatQuant", "minifloat"), ("IntQuant", "newer name for Quant")])
def test_other_quantizers_are_named_not_called_float(op_type, needle, tmp_path):
    from edgekit.errors import UnsupportedOpError
    from edgekit.frontends.qonnx import import_qonnx

    from edgekit.frontends.qonnx_writer import GraphBuilder

    b = GraphBuilder(8)
    b.last = b.node(op_type, [b.last, b.const(1.0), b.const(0.0), b.const(4.0)], domain=b.domain)
    with pytest.raises(UnsupportedOpError, match=rf"\({op_type}\): .*{needle}"):
        import_qonnx(b.save(tmp_path / "m.onnx"))
