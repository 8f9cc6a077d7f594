"""Layers whose generated code is identical but for their constant arrays share one C function
(backends/cortexm/sharing.py): MobileNet-style repeated blocks compile once, each layer keeps a small
wrapper of its own name (so `edgekit profile` still counts it) that passes its own weights, and every
stage stays bit-exact."""
from __future__ import annotations

import re

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.sharing import share_identical_layers
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite

from helpers.tflite_layers import conv_layer

A = tflite.ActivationFunctionType


def repeated_blocks(seed: int, blocks: int = 3) -> bytes:
    """conv 3x3 -> `blocks` x (depthwise 3x3, pointwise 16 -> 16), every block of one shape and zero points
    (ReLU outputs at zero point -128), random weights and scales per layer."""
    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    x = inp = b.act((1, 10, 9, 3), 0.02, 5)
    x, shape, scale, _ = conv_layer(b, rng, x, (10, 9, 3), 0.02, 16, 3, act=A.RELU, x_rms=45.0, zp=-128)
    for _ in range(blocks):
        x, shape, scale, _ = conv_layer(b, rng, x, shape, scale, 0, 3, act=A.RELU, depthwise=True, x_rms=30.0,
                                        zp=-128)
        x, shape, scale, _ = conv_layer(b, rng, x, shape, scale, 16, 1, act=A.RELU, x_rms=30.0, zp=-128)
    return b.build([inp], [x])


@pytest.mark.parametrize("kernels,optimize", [("optimized", "balanced"), ("optimized", "size"),
                                              ("reference", None)])
def test_repeated_blocks_share_code_and_stay_exact(tmp_path, kernels, optimize):
    model = tmp_path / "blocks.tflite"
    model.write_bytes(repeated_blocks(3))
    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out, kernels=kernels, optimize=optimize)
    src = (out / "src" / "model.c").read_text()
    shared = sorted(set(re.findall(r"^EK_LAYER void (ek_shared\d+)\(", src, re.M)))
    assert shared, "no layer shares its code"
    # the three depthwise and the three pointwise layers call shared code; the first conv has no twin
    wrappers = re.findall(r"^EK_LAYER void (ek_layer\d+_\w+)\([^)]*\)\n\{\n    (ek_shared\d+)\(", src, re.M)
    served = {w for w, _ in wrappers}
    assert {n for n in served if "layer0_" in n} == set()
    assert len(served) == 6
    elf = out / res.manifest.firmware
    syms = {s["name"]: s for s in tc.symbols(elf) if s["type"] in "tT"}
    # with EK_USE_DSP (the firmware) optimized builds share the DSP code; the reference build its own
    fw_shared = [n for n in syms if n.startswith("ek_shared")]
    assert len(fw_shared) == 2
    for w in served:
        assert syms[w]["size"] <= 48, f"{w} is {syms[w]['size']} B: not a wrapper"
    rep = verify(out, count=6)
    assert rep.ok, rep
    for s in rep.stages:
        assert s.mismatches == 0, s


def test_arrays_become_parameters_and_comments_do_not_matter():
    """Two texts differing only in the layer's name, its arrays' values and a comment share; a different
    constant in the code does not."""
    def text(i, k, note):
        fn = f"ek_layer{i}_c{i}"
        return (f"/* {fn}: weights */\nstatic const int32_t {fn}_w[2] = {{\n    {i}, {i + 1}\n}};\n\n"
                f"/* c{i}: {note} */\nEK_LAYER void {fn}(const int8_t *restrict in, int8_t *restrict out)\n{{\n"
                f"    out[0] = (int8_t)(in[0] * {fn}_w[0] + ek_bias{i}[0] + {k});\n}}\n")
    layers = [{"name": f"c{i}", "fn": f"ek_layer{i}_c{i}", "params": "const int8_t *restrict in, int8_t *restrict out",
               "code": text(i, k, f"layer {i}"), "dsp_code": None} for i, k in ((0, 3), (1, 3), (2, 4))]
    shared = share_identical_layers(layers, {f"ek_bias{i}": "int32_t" for i in range(3)})
    assert shared == {"ek_shared0": ("all", ["c0", "c1"])}
    assert "EK_LAYER void ek_shared0(const int8_t *restrict in, int8_t *restrict out, const int32_t *restrict ek_c0, " \
           "const int32_t *restrict ek_c1)" in layers[0]["code"]
    assert "ek_shared0(in, out, ek_layer1_c1_w, ek_bias1);" in layers[1]["code"]
    assert "static const int32_t ek_layer1_c1_w[2]" in layers[1]["code"]
    assert "ek_shared" not in layers[2]["code"]


def test_layers_without_arrays_share_with_their_own_parameters_only(tmp_path):
    """Two identical layers that name no constant array (two concats of one shape, found by the fuzzer, seed
    1026): the shared body takes the layer's parameters and nothing more (no trailing comma), and compiles."""
    def text(i):
        fn = f"ek_layer{i}_cat{i}"
        return (f"EK_LAYER void {fn}(const int8_t *restrict in, const int8_t *restrict in1, int8_t *restrict out)\n"
                f"{{\n    out[0] = in[0];\n    out[1] = in1[0];\n}}\n")
    params = "const int8_t *restrict in, const int8_t *restrict in1, int8_t *restrict out"
    layers = [{"name": f"cat{i}", "fn": f"ek_layer{i}_cat{i}", "params": params, "code": text(i), "dsp_code": None}
              for i in range(2)]
    assert share_identical_layers(layers, {}) == {"ek_shared0": ("all", ["cat0", "cat1"])}
    assert f"EK_LAYER void ek_shared0({params})\n" in layers[0]["code"]
    assert "ek_shared0(in, in1, out); /* shared code */" in layers[1]["code"]
    source = "#include <stdint.h>\n#define EK_LAYER static\n" + layers[0]["code"] + layers[1]["code"] + (
        "void run(const int8_t *a, const int8_t *b, int8_t *o);\n"
        "void run(const int8_t *a, const int8_t *b, int8_t *o) { ek_layer0_cat0(a, b, o); ek_layer1_cat1(a, b, o); }\n")
    src = tmp_path / "shared.c"
    src.write_text(source)
    tc.run_tool([tc.host_cc(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(src),
                 "-o", str(tmp_path / "shared.o")], "compiling the shared layers")
