"""Binary and ternary kernels (backends/cortexm/kernels/binary.py, templates/cortexm/ops_bin/): FINN
TFC-style MLPs made with Brevitas (1-bit weights with 1-bit and with 2-bit activations) bit-exact on the
Cortex-M4, M55 and M0+ boards; layers of many shapes (word tails, Harley-Seal blocks, strides, ternary
weights) against the simulator through the portable kernels (host) and the DSP ones (firmware); the
popcount identity; flash per binary weight."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm.kernels.binary import DenseXnor, bit_planes, dsp_order, paired, weight_kind
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
    # the 8-bit input x binary weights, then the hidden and output layers (Helium's XNOR kernel on the M55)
    xnor = "mve_dense_xnor" if board == "mps3-an547" else "dense_xnor"
    assert kinds == ["dense_binary"] + [xnor if act_bits == 1 else "dense_binary"] * 3, kinds
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


@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
@pytest.mark.parametrize("make,kinds", [(shapes_1w1a, {"dense_xnor", "dense_binary"}),
                                        (shapes_conv, {"conv_xnor"}), (ternary, {"dense_binary"})],
                         ids=["dense_1w1a", "conv_1w1a", "ternary"])
def test_binary_kernels_over_shapes(make, kinds, board, tmp_path):
    """On the M4 the host runner checks the portable kernels and the firmware the DSP ones (generated
    Harley-Seal); on the M55 the firmware runs the Helium ones (word tails, part blocks, strides)."""
    if board == "mps3-an547":
        kinds = {"mve_" + k if k.endswith("_xnor") else k for k in kinds}
    out = tmp_path / "b"
    res = build(make(tmp_path / "m.onnx"), None, board, out)
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
        region = xw.shape[1] // 2 * 2
        assert np.array_equal(pw[:, 0:region:2] ^ pw[:, 1:region:2], xw[:, 0:region:2])
        assert np.array_equal(pw[:, 1:region:2], xw[:, 0:region:2] ^ xw[:, 1:region:2])
        assert np.array_equal(pw[:, region:], xw[:, region:])
        # the DSP bit order permutes each whole word's bits: the popcount of a XOR w is the same
        order = dsp_order(n)
        da, dw = bit_planes(a[:, order], lambda c: c < 0), bit_planes(w[:, order], lambda c: c < 0)
        assert [sum(bin(int(v)).count("1") for v in (da[0] ^ row)) for row in dw] == pop.tolist()


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


def _run_chunk(chunk, memory_a: np.ndarray, weights: np.ndarray, pw: int) -> tuple[int, int]:
    """Executes one generated chunk (kernels/xnor_asm.py) on 32-bit words: the Thumb-2 instructions it uses,
    as the Cortex-M runs them. Returns (the count it leaves, the weight index after it)."""
    import re

    mask = 0xFFFFFFFF
    regs = {"zero": 0}

    def value(tok: str) -> int:
        tok = tok.strip()
        if tok.startswith("#"):
            return int(tok[1:], 0) & mask
        return regs[tok[2:-1]]

    def operand(parts: list[str]) -> int:
        v = value(parts[0])
        if len(parts) > 1:
            kind, amount = parts[1].split()
            amount = int(amount[1:])
            v = (v >> amount) if kind == "lsr" else (v << amount) & mask
        return v

    for line in chunk.lines:
        op, rest = line.split(" ", 1)
        names = re.findall(r"%\[(\w+)\]", rest)
        if op in ("ldrd", "ldr"):
            dests, count = names[:-1], len(names) - 1
            if names[-1] == "pw":                         # post-indexed: the weights in order
                values, pw = weights[pw:pw + count], pw + count
            else:
                at = chunk.base + int(re.search(r"#(\d+)\]", rest).group(1)) // 4
                values = memory_a[at:at + count]
            regs.update({r: int(v) for r, v in zip(dests, values)})
            continue
        args = [a.strip() for a in rest.split(",")]
        d = args[0][2:-1]
        if op in ("usad8", "usada8"):
            v = value(args[1])
            total = sum((v >> (8 * i)) & 0xFF for i in range(4))
            regs[d] = (total + (value(args[3]) if op == "usada8" else 0)) & mask
        elif op == "mov":
            regs[d] = value(args[1])
        elif op == "lsl":
            regs[d] = (value(args[1]) << int(args[2][1:])) & mask
        else:
            a, b = value(args[1]), operand(args[2:])
            regs[d] = {"eor": a ^ b, "and": a & b, "orr": a | b, "bic": a & ~b & mask, "sub": (a - b) & mask,
                       "add": (a + b) & mask}[op]
    return regs[chunk.out], pw


@pytest.mark.parametrize("runs,words,stride", [(1, 32, 0), (1, 1, 0), (1, 17, 0), (1, 130, 0), (3, 2, 20),
                                               (9, 3, 3), (6, 7, 12), (2, 255, 300)])
def test_generated_harley_seal_counts_exactly(runs, words, stride):
    """The DSP kernels' straight-line popcount (kernels/xnor_asm.py), executed instruction by instruction on
    paired words: the XOR popcount for rows of one word to long rows cut into several chunks, and runs with
    gaps (a convolution's window rows)."""
    from edgekit.backends.cortexm.kernels import xnor_asm

    rng = np.random.default_rng(runs * 1000 + words)
    items = xnor_asm.group_items(runs, words, stride or words)
    chunks = xnor_asm.chunks(items)
    assert all(len(c.registers) + c.zero <= xnor_asm.MAX_REGISTERS for c in chunks)
    size = (runs - 1) * (stride or words) + words
    for trial in range(6):
        a = rng.integers(0, 2**32, size=size, dtype=np.uint64)
        if trial == 0:
            a[:] = 0xFFFFFFFF                             # every bit differs: the byte sums' upper bound
        row = np.concatenate([np.arange(g * (stride or words), g * (stride or words) + words) for g in range(runs)])
        w = rng.integers(0, 2**32, size=row.size, dtype=np.uint64) if trial else np.zeros(row.size, np.uint64)
        expected = sum(bin(int(v)).count("1") for v in (a[row] ^ w))
        memory = a.copy()                                 # each run's words paired in place, as ek_pair_groups
        for g in range(runs):
            at = g * (stride or words)
            memory[at:at + words] = paired(a[None, at:at + words])[0]
        stored_w = np.concatenate([paired(w[None, g * words:(g + 1) * words])[0] for g in range(runs)])
        total, pw = 0, 0
        for c in chunks:
            count, pw = _run_chunk(c, memory, stored_w, pw)
            total += count
        assert pw == row.size and total == expected, (trial, total, expected)
