"""DSP kernels that read 4- and 2-bit weights packed in flash (kernels/conv2d_gemm_packed.py,
kernels/dense_packed.py, kernels/packing_dsp.py) equal the reference bit for bit.

Two sources of sub-byte weights: Brevitas models with 4- and 2-bit weight quantizers (QONNX single
rounding, signed and narrow ranges, uint8 inputs after ReLUs, odd channel counts, k not a multiple of
the packing, a fused residual add), and the random TFLite chains of test_kernels_dsp.py with their
convolution and dense weights rounded to 4 or 2 bits at import (TFLite's double rounding: the
one-multiply and SMMLAR epilogues, nonzero input zero points, fused residual adds). Each is built for the
emulated Cortex-M4 (and M7, M33; the M55 for the Helium forms, mve_gemm_packed.py), and ``verify`` compares
the firmware (packed kernels) and the host build (reference kernels) with the simulator element by element.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.backends.cortexm.kernels.packing_dsp import (low_mask, mask, offset_of, scale_log2, scaled_bound_refusal,
                                                          set_words, sets_per_word, unpack_set)
from helpers.codes import input_codes
from helpers.compile_levels import disassembly_at_every_level
from test_kernels_dsp import CHAINS

PACKED = ("conv2d_gemm_packed", "dense_packed", "mve_gemm_packed", "mve_dense_packed")


# ---------------------------------------------------------------------------------------
# Unit: the word layout and what the instructions make of it
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [4, 2])
def test_each_set_unpacks_to_the_scaled_weights(bits):
    rng = np.random.default_rng(bits)
    n = sets_per_word(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    sets = rng.integers(lo, hi + 1, size=(500, n, 4))
    sets[0] = lo
    sets[1] = hi
    words = set_words(sets, bits)
    assert words.min() >= -(2**31) and words.max() < 2**31
    k = 2 ** scale_log2(bits)
    for word, want in zip(words.tolist(), sets.tolist()):
        for s in range(n):
            even, odd = unpack_set(word, s, bits)
            assert even == (k * want[s][0], k * want[s][2]) and odd == (k * want[s][1], k * want[s][3])
    assert mask(4) == 0xF0F0F0F0 and mask(2) == 0xC0C0C0C0


def _sxtb16(word: int, ror: bool) -> tuple[int, int]:
    w = word & 0xFFFFFFFF
    if ror:
        w = ((w >> 8) | (w << 24)) & 0xFFFFFFFF
    return tuple((lambda b: b - 256 if b >= 128 else b)((w >> (16 * h)) & 0xFF) for h in range(2))


@pytest.mark.parametrize("bits", [4, 2])
def test_dense_rows_follow_from_the_sums_of_the_offset_sets(bits):
    """dense_packed's arithmetic in Python: per k-quad, the top set's SXTB16 pair and each lower set's pair of
    the word AND low_mask(s), SMLAD with the input word's extensions, summed modulo 2^32; the rows from the
    sums' differences and the offset times the inputs' sum equal the true dot products."""
    rng = np.random.default_rng(7 + bits)
    n = sets_per_word(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for trial in range(40):
        quads = int(rng.integers(1, 30))
        rows = rng.integers(lo, hi + 1, size=(n, 4 * quads))           # the word's rows (sets)
        if trial == 0:
            rows[:] = lo
        x = rng.integers(-128, 128, size=4 * quads) if trial % 2 else rng.integers(0, 256, size=4 * quads)
        words = set_words(rows.reshape(n, quads, 4).transpose(1, 0, 2), bits, offset=True)   # (quads,)
        sums = [0] * n
        for q, word in enumerate(words.tolist()):
            xa, xb = (x[4 * q], x[4 * q + 2]), (x[4 * q + 1], x[4 * q + 3])
            for s in range(n):
                t = word if s == 0 else word & low_mask(bits, s)
                (e0, e2), (e1, e3) = _sxtb16(t, False), _sxtb16(t, True)
                sums[s] = (sums[s] + xa[0] * e0 + xa[1] * e2 + xb[0] * e1 + xb[1] * e3) % 2**32
        signed = lambda v: v - 2**32 if v >= 2**31 else v  # noqa: E731
        off_sum = offset_of(bits) * int(x.sum())
        got = []
        for s in range(n):
            if s == n - 1:
                got.append(signed((sums[s] - off_sum) % 2**32))
            else:
                d = signed((sums[s] - sums[s + 1]) % 2**32) >> (8 - (s + 1) * bits)
                got.append(d - (off_sum if s else 0))
        assert got == (rows @ x).tolist()


def test_the_scaled_accumulator_must_fit_int32():
    assert scaled_bound_refusal(2**27 - 1, 4) is None
    assert "exceeds int32" in scaled_bound_refusal(2**27, 4)
    assert scaled_bound_refusal(2**25 - 1, 2) is None and scaled_bound_refusal(2**25, 2)


def test_packed_variants_are_registered_for_size_and_balanced():
    reg = kernel_registry.registry()
    for name in PACKED[:2]:
        v = reg.get(name)
        assert v.modes == frozenset({"size", "balanced"}) and v.features == frozenset({"dsp"})
        assert v.priority > reg.get(name.replace("_packed", "_int8")).priority
    for name in PACKED[2:]:   # Helium: above the int8 Helium GEMM on the M55
        v = reg.get(name)
        assert v.modes == frozenset({"size", "balanced"}) and v.features == frozenset({"dsp", "mve"})
        assert v.priority > reg.get(name.replace("_packed", "")).priority


# ---------------------------------------------------------------------------------------
# Random TFLite chains with their conv and dense weights rounded to 4 or 2 bits
# ---------------------------------------------------------------------------------------
def _narrowing_import(bits: int):
    """import_tflite, then every non-depthwise conv and dense weight tensor rounded to ``bits`` bits."""
    from edgekit.frontends.tflite import importer

    original = importer.import_tflite

    def narrowed(model):
        graph, cleaned = original(model)
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        for n in graph.nodes:
            if n.op == "dense" or (n.op == "conv2d" and not n.attrs["depthwise"]):
                name = n.inputs[1]
                w = graph.constants[name].astype(np.int64)
                graph.constants[name] = np.clip(np.round(w / 2 ** (8 - bits)), lo, hi).astype(graph.constants[name].dtype)
                t = graph.tensors[name]
                t.bits, t.qmin, t.qmax = bits, lo, hi
        return graph, cleaned

    return narrowed


def _kernels(out) -> dict:
    return {r["name"]: r.get("kernel", "") for r in json.loads((out / "manifest.json").read_text())["layers"]}


def _check_packed(out, graph, rep, bits):
    kernels = _kernels(out)
    layers = [n for n in graph.nodes if n.op == "dense" or (n.op == "conv2d" and not n.attrs["depthwise"])]
    assert layers
    for n in layers:
        k = kernels[n.name]
        if bits == 2 and k.startswith("optimized dense_binary"):   # ternary weights: the add/subtract kernel
            continue
        assert k.startswith(tuple(f"optimized {v}" for v in PACKED)), (n.name, k)
        assert f"{bits}-bit weights packed" in k, (n.name, k)
    for s in rep.stages:
        if s.stage.startswith(("host", "firmware")):
            assert s.elements > 0 and s.mismatches == 0, rep.table()
    assert rep.ok, rep.table()


TFLITE_CASES = [("a", 0, 4, "cortex-m4", "size"), ("a", 1, 2, "cortex-m4", "size"), ("b", 2, 4, "cortex-m4", "size"),
                ("b", 3, 2, "cortex-m4", "balanced"), ("d", 6, 4, "cortex-m4", "balanced"),
                ("a", 5, 4, "cortex-m7", "size"), ("b", 4, 2, "cortex-m33", "size"), ("a", 0, 4, "cortex-m55", "size"),
                ("a", 1, 2, "cortex-m55", "size"), ("b", 2, 4, "cortex-m55", "balanced"), ("b", 3, 2, "cortex-m55", "size")]
BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500", "cortex-m33": "mps2-an505", "cortex-m55": "mps3-an547"}


@pytest.mark.parametrize("chain,seed,bits,target,optimize", TFLITE_CASES)
def test_tflite_chains_with_packed_weights_bit_exact(chain, seed, bits, target, optimize, tmp_path, monkeypatch):
    from edgekit.api import build, verify
    from edgekit.frontends.tflite import importer
    from edgekit.ir.graph import Graph

    monkeypatch.setattr(importer, "import_tflite", _narrowing_import(bits))
    model = tmp_path / f"{chain}{seed}.tflite"
    model.write_bytes(CHAINS[chain](seed))
    out = tmp_path / "b"
    build(model, target, BOARDS[target], out, optimize=optimize)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    codes = input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10)
    rep = verify(out, codes=codes, stages=("host", "qemu"))
    _check_packed(out, graph, rep, bits)
    src = (out / "src" / "model.c").read_text()
    if target == "cortex-m55":   # Helium: the lower rows of a weight vector by VAND
        assert "vandq_s8(w0, vdupq_n_s8(" in src and "mve_gemm_packed" in src
    else:                        # the DSP GEMM micro-kernel's unpacking
        assert f"and %[t], %[t], #0x{mask(bits):08X}" in src


# ---------------------------------------------------------------------------------------
# Brevitas models: QONNX single rounding, uint8 inputs, narrow and full ranges, a residual add
# ---------------------------------------------------------------------------------------
def _brevitas(bits: int, narrow: bool, seed: int):
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int32Bias, Int8WeightPerChannelFloat
    from torch import nn

    from helpers.brevitas_models import U, W, Seq, qconv2d, qid

    rng = np.random.default_rng(seed)
    wq = dict(weight_bit_width=bits, weight_narrow_range=narrow)
    relu = lambda: qnn.QuantReLU(act_quant=U, return_quant_tensor=True)  # noqa: E731

    class Block(nn.Module):
        """conv -> relu -> conv, plus the block's input: the add fuses into the second conv."""

        def __init__(self, c):
            super().__init__()
            self.c1, self.r1 = qconv2d(c, c, 3, padding=1, **wq), relu()
            self.c2, self.q2, self.qs = qconv2d(c, c, 3, padding=1, **wq), qid(), qid()

        def forward(self, x):
            y = self.q2(self.c2(self.r1(self.c1(x))))
            return self.qs(x).value + y.value

    c0, c1 = int(rng.choice([1, 3, 5])), int(rng.choice([5, 7, 9]))
    h, w = int(rng.integers(7, 11)), int(rng.integers(6, 10))
    k = int(rng.choice([2, 3, 5]))
    body = [qconv2d(c0, c1, k, padding=k // 2, **wq), relu(),
            qconv2d(c1, c1 + 2, 3, stride=2, dilation=int(rng.choice([1, 2])), padding=1,
                    weight_quant=Int8WeightPerChannelFloat, **wq), relu(),
            qconv2d(c1 + 2, 4, 1, **wq), qid(), Block(4), relu(), nn.Flatten()]
    seq = Seq(*body)
    with torch.no_grad():
        n_flat = int(seq.body(seq.inp(torch.zeros(1, c0, h, w))).value.numel())
    seq.body.append(qnn.QuantLinear(n_flat, int(rng.choice([5, 9, 11])), weight_quant=W, bias_quant=Int32Bias,
                                    return_quant_tensor=True, **wq))
    return seq, (c0, h, w)


@pytest.mark.parametrize("bits,narrow,seed,target", [(4, True, 0, "cortex-m4"), (4, False, 1, "cortex-m4"),
                                                     (2, False, 2, "cortex-m4"), (2, True, 3, "cortex-m4"),
                                                     (4, False, 4, "cortex-m55"), (2, False, 5, "cortex-m55")])
def test_brevitas_models_with_packed_weights_bit_exact(bits, narrow, seed, target, tmp_path):
    import torch

    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph
    from edgekit.qat import export_qonnx
    from helpers.calibration import calibrate

    torch.manual_seed(seed)
    model, shape = _brevitas(bits, narrow, seed)
    model = calibrate(model, shape)
    onnx_path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / "m.onnx")
    out = tmp_path / "b"
    build(onnx_path, target, BOARDS[target], out, optimize="size")
    graph = Graph.load(out)
    assert any(n.attrs.get("residual") for n in graph.nodes), "the residual add did not fuse"
    assert any(graph.tensors[n.inputs[0]].dtype == "uint8" for n in graph.nodes if n.op == "conv2d")
    rep = verify(out, count=48, seed=seed, stages=("host", "qemu"))
    _check_packed(out, graph, rep, bits)


# ---------------------------------------------------------------------------------------
# The generated C at every optimization level; flash and instructions against int8 weights
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [4, 2])
def test_packed_model_c_compiles_with_any_optimization_and_a_frame_pointer(bits, tmp_path, monkeypatch):
    """13 registers in the packed micro-kernels too: r7 stays free for a frame pointer; -O0 gets the
    reference kernels."""
    from edgekit.api import build
    from edgekit.frontends.tflite import importer

    monkeypatch.setattr(importer, "import_tflite", _narrowing_import(bits))
    model = tmp_path / "a0.tflite"
    model.write_bytes(CHAINS["a"](0))
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize="size")
    for flags, dis in disassembly_at_every_level(out, tmp_path).items():
        assert ("and.w" in dis and "sxtb16" in dis) == (flags != ("-O0",)), flags


@pytest.mark.parametrize("seed,bits", [(1, 4), (4, 2)])
def test_row_fused_blocks_with_packed_weights_bit_exact(seed, bits, tmp_path, monkeypatch):
    """The packed GEMM computes ranges of output pixels over rings of rows (row fusion, ir/planner.py) as
    conv2d_gemm does: test_row_fusion's residual blocks and stride-2 consumers, weights rounded to 4 / 2 bits."""
    from edgekit.api import build, verify
    from edgekit.frontends.tflite import importer
    from test_row_fusion import _block_model

    monkeypatch.setattr(importer, "import_tflite", _narrowing_import(bits))
    path = tmp_path / "m.tflite"
    path.write_bytes(_block_model(seed))
    res = build(path, "cortex-m4", "mps2-an386", tmp_path / "b", optimize="size")
    plan = res.manifest.memory_plan
    assert plan["fused"], plan["strategy"]
    variants = res.manifest.kernel_variants
    assert any(variants[f["producer"]] == "conv2d_gemm_packed" for f in plan["fused"]), variants
    rep = verify(tmp_path / "b", count=16, seed=seed, stages=("host", "qemu"))
    for s in rep.stages:
        if s.stage.startswith(("host", "firmware")):
            assert s.elements > 0 and s.mismatches == 0, rep.table()


@pytest.mark.parametrize("bits,target", [(4, "cortex-m4"), (2, "cortex-m4"), (4, "cortex-m55")])
def test_packed_weights_take_a_fraction_of_the_int8_flash_for_a_few_more_instructions(bits, target, tmp_path,
                                                                                    monkeypatch):
    """chain a0 with its conv and dense weights rounded to ``bits``: built with the packed variants and with them
    withdrawn (int8 weights: conv2d_gemm_int8 / dense_int8, mve_gemm / mve_dense), the layers' weight streams
    (their ``ek_layer*_w`` symbols in the map) shrink to about bits / 8, the firmware's instructions grow by less
    than a fifth."""
    from edgekit.api import build
    from edgekit.backends.cortexm.profile import profile
    from edgekit.frontends.tflite import importer

    monkeypatch.setattr(importer, "import_tflite", _narrowing_import(bits))
    model = tmp_path / "a0.tflite"
    model.write_bytes(CHAINS["a"](0))
    reg = kernel_registry.registry()
    got = {}
    for packed in (True, False):
        if not packed:
            for name in PACKED:
                monkeypatch.setattr(reg.get(name), "modes", frozenset())
        res = build(model, target, BOARDS[target], tmp_path / str(packed), optimize="size")
        variants = res.manifest.kernel_variants
        layers = [n for n, v in variants.items() if "gemm" in v or "dense" in v]
        assert layers and all((variants[n] in PACKED) == packed for n in layers), variants
        syms = {s["symbol"]: s["bytes"] for s in res.manifest.memory_breakdown["weight_symbols"]}
        streams = sum(b for s, b in syms.items() if s.startswith("ek_layer") and s.endswith("_w"))
        n = profile(res.out_dir, count=1, write=False).to_json()["total"]["instructions"]
        got[packed] = (streams, n)
    (w_packed, n_packed), (w_int8, n_int8) = got[True], got[False]
    # the streams hold biases and requantization constants besides the weights: a little above bits / 8
    assert w_packed < w_int8 * (bits / 8 + 0.2), got
    # 1.22x for 2-bit on the M4 since the int8 build's few-channel first conv widens its weights in RAM once
    # per call (conv2d_fewch_int8), which the packed GEMM that takes that layer here does not
    assert n_packed < 1.25 * n_int8, got
