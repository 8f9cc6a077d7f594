"""Binary and ternary kernels (backends/cortexm/kernels/binary.py, templates/cortexm/ops_bin/): FINN
TFC-style MLPs made with Brevitas (1-bit weights with 1-bit and with 2-bit activations) bit-exact on the
Cortex-M4, M55 and M0+ boards; layers of many shapes (word tails, Harley-Seal blocks, strides, ternary
weights) against the simulator through the portable kernels (host) and the DSP ones (firmware); the
popcount identity; flash per binary weight."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm.kernels.binary import DenseXnor, bit_planes, paired, weight_kind
from edgekit.frontends.qonnx_writer import GraphBuilder
from edgekit.ir.graph import Graph



def tfc(path, act_bits: int, n_in: int = 64, hidden=(64, 64, 64), n_out: int = 10):
    """FINN's TFC topology (smaller input): an 8-bit input quantizer, binary-weight dense layers with
    BatchNorm and 1-bit (BipolarQuant) or 2-bit activations, a binary-weight output layer."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas.quant import Int8ActPerTensorFixedPoint
    from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst

    torch.manual_seed(act_bits)
    layers = [QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)]
    width = n_in
    for h in hidden:
        bn = torch.nn.BatchNorm1d(h)
        bn.weight.data.uniform_(-2, 2)
        bn.bias.data.uniform_(-1, 1)
        bn.running_mean.uniform_(-3, 3)
        bn.running_var.uniform_(0.5, 4)
        act = (QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True) if act_bits == 1
               else QuantIdentity(bit_width=act_bits, return_quant_tensor=True))
        layers += [QuantLinear(width, h, bias=False, weight_quant=SignedBinaryWeightPerTensorConst), bn, act]
        width = h
    layers.append(QuantLinear(width, n_out, bias=False, weight_quant=SignedBinaryWeightPerTensorConst))
    model = torch.nn.Sequential(*layers).eval()
    export_qonnx(model, input_t=torch.randn(1, n_in), export_path=str(path), dynamo=False)
    return path


@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547", "microbit"])
@pytest.mark.parametrize("act_bits", [1, 2])
def test_tfc_binary_mlp_bit_exact(board, act_bits, tmp_path):
    model = tfc(tmp_path / f"tfc_w1a{act_bits}.onnx", act_bits)
    out = tmp_path / "b"
    res = build(model, None, board, out)
    graph = Graph.load(out)
    kinds = [res.manifest.kernel_variants[n.name] for n in graph.nodes if n.op == "dense"]
    # the 8-bit input x binary weights, then the hidden and output layers
    assert kinds == ["dense_binary"] + ["dense_xnor" if act_bits == 1 else "dense_binary"] * 3, kinds
    rep = verify(out, count=64, seed=3)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for name in ("qonnx", "host", "firmware"):
        assert stages[name].must_be_exact and stages[name].elements > 0 and stages[name].mismatches == 0, rep.table()


def shapes_1w1a(path):
    """Binary dense layers whose rows end in word tails, whole Harley-Seal blocks and both."""
    rng = np.random.default_rng(11)
    b = GraphBuilder(37).q(2.0**-4, 8).dense(rng.normal(size=(37, 300)), 1.0).sign()
    b.dense(rng.normal(size=(300, 513)), 1.0).sign().dense(rng.normal(size=(513, 33)), 1.0).sign(0.5)
    return b.dense(rng.normal(size=(33, 7)), 1.0).save(path)


def shapes_conv(path):
    """Binary convolutions: 1x1, 3x3 over 70 channels (a word tail per pixel), 2x3 with stride 2."""
    rng = np.random.default_rng(12)
    b = GraphBuilder(70 * 9 * 9, input_shape=(70, 9, 9)).q(2.0**-4, 8).conv(rng.normal(size=(70, 70, 1, 1)), 1.0)
    b.sign().conv(rng.normal(size=(24, 70, 3, 3)), 1.0).sign()
    b.last = b.node("Conv", [b.last, b.bipolar(b.const(rng.normal(size=(9, 24, 2, 3)), "w"))],
                    kernel_shape=[2, 3], strides=[2, 2])
    return b.sign().flatten(9 * 3 * 3).dense(rng.normal(size=(81, 4)), 1.0).save(path)


def ternary(path):
    """Ternary (2-bit narrow-range) weights x 8-bit inputs, then x 2-bit activations."""
    rng = np.random.default_rng(13)
    b = GraphBuilder(45).q(2.0**-4, 8).dense(rng.normal(size=(45, 70)), 0.5, 2).q(2.0**-3, 8, signed=False)
    return b.dense(rng.normal(size=(70, 6)), 0.5, 2).save(path)


@pytest.mark.parametrize("make,kinds", [(shapes_1w1a, {"dense_xnor", "dense_binary"}),
                                        (shapes_conv, {"conv_xnor"}), (ternary, {"dense_binary"})],
                         ids=["dense_1w1a", "conv_1w1a", "ternary"])
def test_binary_kernels_over_shapes(make, kinds, tmp_path):
    """On the M4 the host runner checks the portable kernels and the firmware the DSP ones (Harley-Seal)."""
    out = tmp_path / "b"
    res = build(make(tmp_path / "m.onnx"), None, "mps2-an386", out)
    assert kinds <= set(res.manifest.kernel_variants.values()), res.manifest.kernel_variants
    rep = verify(out, count=48, seed=5)
    assert rep.ok, rep.table()
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    assert stages["host"].mismatches == 0 and stages["firmware"].mismatches == 0, rep.table()


def test_popcount_form_of_a_bipolar_dot_product():
    """sum(a * w) over n terms -1/+1 equals n - 2 * popcount(signs(a) XOR signs(w)) (docs/integer-contract.md),
    on the words the kernels store, and the pair layout keeps every word recoverable."""
    rng = np.random.default_rng(0)
    for n in (1, 31, 32, 33, 300, 1024):
        a = rng.choice([-1, 1], size=(1, n))
        w = rng.choice([-1, 1], size=(5, n))
        xa, xw = bit_planes(a, lambda c: c < 0), bit_planes(w, lambda c: c < 0)
        pop = np.array([sum(bin(int(v)).count("1") for v in (xa[0] ^ row)) for row in xw])
        assert np.array_equal(n - 2 * pop, (w * a).sum(axis=1))
        pw = paired(xw)
        region = xw.shape[1] // 8 * 8
        assert np.array_equal(pw[:, 0:region:2] ^ pw[:, 1:region:2], xw[:, 0:region:2])
        assert np.array_equal(pw[:, region:], xw[:, region:])


def test_binary_weights_take_one_bit_in_flash(tmp_path):
    out = tmp_path / "b"
    build(tfc(tmp_path / "m.onnx", 1), None, "mps2-an386", out)
    graph = Graph.load(out)
    xnor = DenseXnor()
    layers = [n for n in graph.nodes if n.op == "dense" and xnor.applies(n, graph)]
    assert len(layers) == 3
    for node in layers:
        w = graph.constants[node.inputs[1]]
        assert weight_kind(w) == "binary"
        assert xnor.select(node, graph, None).weight_bytes / w.size <= 0.13
    src = (out / "src" / "model.c").read_text()
    for node in layers:  # the -1/+1 codes are not also stored for a reference kernel
        assert f"{node.inputs[1]}: [" not in src
