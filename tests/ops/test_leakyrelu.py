"""LeakyRelu: bit-exact qonnx (float32) vs simulator vs host C vs QEMU firmware, and 1-LSB faults caught.

Brevitas models export ``nn.LeakyReLU`` between quantizers as Quant -> LeakyRelu -> Quant;
the hand-written graphs pin the scales where float32's rounding of ``alpha * x`` decides
the output code (alpha = 0.01, ``s_in / s_out = 2``, ``x - zp = -75``: float32 gives -1.5, which
rounds to -2; the exact product -1.49999997 rounds to -1).
"""
from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.firmware import compile_firmware
from edgekit.errors import UnsupportedOpError
from edgekit.ir.graph import Graph
from edgekit.qat import export_qonnx
from edgekit.targets import get_board, get_core

from helpers.brevitas_models import Seq, qconv2d, qid
from helpers.calibration import calibrate

BREVITAS_MODELS = {
    "conv_leakyrelu_0.01": (lambda: Seq(qconv2d(3, 4, 3), qid(), nn.LeakyReLU(0.01)), (3, 6, 6)),
    "leakyrelu_0.2_after_input": (lambda: Seq(nn.LeakyReLU(0.2)), (2, 5, 5)),
    "conv_leakyrelu_conv": (lambda: Seq(qconv2d(3, 4, 3, padding=1), qid(), nn.LeakyReLU(0.1), qid(),
                                        qconv2d(4, 3, 3)), (3, 6, 6)),
}


def stage(rep, name: str):
    return next(s for s in rep.stages if s.stage.startswith(name))


def _assert_all_exact(rep):
    for name in ("qonnx", "host C", "firmware"):
        s = stage(rep, name)
        assert s.must_be_exact and s.mismatches == 0, rep.table()
    assert rep.ok


@pytest.mark.parametrize("name", sorted(BREVITAS_MODELS))
def test_brevitas_leakyrelu_bit_exact(name, tmp_path):
    factory, shape = BREVITAS_MODELS[name]
    torch.manual_seed(zlib.crc32(name.encode()) % 1000)
    model = calibrate(factory(), shape)
    onnx_path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / "m.onnx")
    build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
    assert "leakyrelu" in {n.op for n in Graph.load(tmp_path / "b").nodes}
    _assert_all_exact(verify(tmp_path / "b", count=96, seed=2))


def leakyrelu_graph(path: Path, alpha: float, s_in: float, s_out: float, in_bits: int = 8, width: int = 64) -> Path:
    """x -> Quant(s_in, in_bits, signed) -> LeakyRelu(alpha) -> Quant(s_out, int8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    for name, src, scale, bits in (("in_q", "x", s_in, in_bits), ("out_q", "lrelu", s_out, 8)):
        inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                  numpy_helper.from_array(np.array(0.0, np.float32), f"{name}_zp"),
                  numpy_helper.from_array(np.array(float(bits), np.float32), f"{name}_bits")]
        nodes.append(helper.make_node("Quant", [src, f"{name}_scale", f"{name}_zp", f"{name}_bits"], [f"{name}_out"],
                                      name=name, domain="qonnx.custom_op.general", narrow=0, signed=1,
                                      rounding_mode="ROUND"))
    nodes.insert(1, helper.make_node("LeakyRelu", ["in_q_out"], ["lrelu"], name="lrelu", alpha=alpha))
    graph = helper.make_graph(nodes, "leakyrelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("out_q_out", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 2)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


# (alpha, s_in, s_out, input bits)
FIXED = {
    "float32_rounding_decides": (0.01, 2.0**-4, 2.0**-5, 8),
    "int16_input": (0.3, 2.0**-10, 2.0**-4, 16),
    "negative_alpha": (-0.125, 2.0**-3, 2.0**-3, 8),
    "alpha_above_one": (1.7, 2.0**-3, 2.0**-2, 8),
}


@pytest.fixture(scope="module")
def rounding_build(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lrelu")
    build(leakyrelu_graph(d / "m.onnx", *FIXED["float32_rounding_decides"]), "cortex-m4", "mps2-an386", d / "b")
    return d / "b"


def test_float32_rounding_case_is_exact(rounding_build):
    graph = Graph.load(rounding_build)
    assert graph.meta["inexact"] == []  # the lowering compared every input code with qonnx's float32 arithmetic
    rep = verify(rounding_build, count=64, seed=1)  # 64 x 64 codes: every int8 code, -75 included
    _assert_all_exact(rep)


@pytest.mark.parametrize("case", sorted(set(FIXED) - {"float32_rounding_decides"}))
def test_fixed_leakyrelu_bit_exact(case, tmp_path):
    build(leakyrelu_graph(tmp_path / "m.onnx", *FIXED[case]), "cortex-m4", "mps2-an386", tmp_path / "b")
    assert Graph.load(tmp_path / "b").meta["inexact"] == []
    _assert_all_exact(verify(tmp_path / "b", count=64, seed=1))


def test_simulator_without_float32_rounding_is_one_lsb_off(rounding_build, monkeypatch):
    """Drop the float32 rounding of the product (an exact requantization of the negative branch
    instead): qonnx and the C kernels now disagree with the simulator by exactly 1 LSB."""
    import edgekit.ops.leakyrelu as op

    monkeypatch.setattr(op, "round_to_float32", lambda p: (np.asarray(p, np.int64), np.zeros_like(p)))
    rep = verify(rounding_build, count=64, seed=1)
    assert not rep.ok
    for name in ("qonnx", "host C", "firmware"):
        s = stage(rep, name)
        assert s.mismatches > 0 and s.max_lsb == 1, rep.table()


def test_c_kernel_one_lsb_off_is_caught(rounding_build, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(rounding_build, b)
    src = (b / "src" / "model.c").read_text()
    broken = src.replace("- r, ", "- r + 1, ")  # every negative input one output LSB higher
    assert broken != src
    (b / "src" / "model.c").write_text(broken)
    import json

    m = json.loads((b / "manifest.json").read_text())
    tc.compile_host(b)
    compile_firmware(b, get_core(m["target"]), get_board(m["board"]), b / "firmware" / "link.ld")
    rep = verify(b, count=64, seed=1)
    assert not rep.ok and stage(rep, "qonnx").mismatches == 0
    for name in ("host C", "firmware"):
        s = stage(rep, name)
        assert s.mismatches > 0 and s.max_lsb == 1, rep.table()


def test_leakyrelu_on_an_accumulator_is_refused(tmp_path):
    """LeakyRelu straight on a convolution's int32 accumulator: one clear error naming the node."""
    torch.manual_seed(0)
    model = calibrate(Seq(qconv2d(3, 4, 3), nn.LeakyReLU(0.01)), (3, 6, 6))
    onnx_path = export_qonnx(model, torch.zeros(1, 3, 6, 6), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedOpError, match=r"LeakyRelu.*needs a quantized per-tensor input.*QuantIdentity"):
        build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
