"""No silent degradation (issue 16): every path on which a layer gets a slower kernel than the one written for it
is listed in ``kernel_fallbacks`` (codegen.kernel_fallbacks: the build line, ``edgekit report`` and the
manifest), with the layer and why.

Paths tested elsewhere: scratch that fits neither an arena gap nor the stack -> the reference kernel
(test_memory_report.py), int16 weights narrowed to int8 or dropped for the board's flash (test_kernels_dsp.py),
the speed dense kernel reading its input per block for lack of stack (test_kernels_dense.py). Here: the refusals
of a faster variant that send a layer to a lower, slower one (kernels/base.py ``Fallback``): the packed 4-/2-bit
variants on the DSP and on Helium (every refusal: the layer loses its packing), dense_asm_int8's accumulator bound
and int16 range. Each test fails without its listing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.backends.cortexm.codegen import kernel_fallbacks
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from test_kernels_dense import fc_chain
from test_kernels_dsp import CHAINS
from test_kernels_packed import _narrowing_import


def _graph(tmp_path, data: bytes, bits: int | None = None):
    from edgekit.frontends.tflite import importer
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    model = tmp_path / "m.tflite"
    model.write_bytes(data)
    graph, _ = (_narrowing_import(bits) if bits else importer.import_tflite)(model)
    run_default_passes(graph)
    return graph, plan_memory(graph)


def _select(graph, plan, features, optimize):
    reg = kernel_registry.registry()
    return {n.name: reg.select(n, graph, plan, features, "optimized", optimize) for n in graph.nodes}


def _packed_fallbacks(graph, sel) -> list[dict]:
    return [f for f in kernel_fallbacks(graph, sel) if "packed" in f["reason"]]


@pytest.mark.parametrize("bits,features,op", [(4, ("dsp",), "conv2d"), (2, ("dsp",), "dense"),
                                              (4, ("dsp", "mve"), "conv2d"), (2, ("dsp", "mve"), "dense")])
def test_a_packed_layer_refused_for_its_accumulator_bound_is_listed(bits, features, op, tmp_path, monkeypatch):
    """4-/2-bit weights whose scaled accumulator bound exceeds int32: the layer runs an int8-weight kernel (more
    flash, unpacked weights) and says so, naming the packed variant and the bound."""
    from edgekit.backends.cortexm.kernels import dense_packed, mve_gemm_packed

    graph, plan = _graph(tmp_path, CHAINS["a"](0), bits)
    node = next(n for n in graph.nodes if n.op == op and not n.attrs.get("depthwise"))
    helium = "mve" in features
    packed = {("conv2d", False): "conv2d_gemm_packed", ("dense", False): "dense_packed",
              ("conv2d", True): "mve_gemm_packed", ("dense", True): "mve_dense_packed"}[op, helium]
    before = _select(graph, plan, features, "size")
    # (only the packed variants' fallbacks: the chain's other layers are not this test's)
    assert before[node.name].kind == packed and not _packed_fallbacks(graph, before)
    # the layers the patched check refuses: the variant's (Helium: both packed variants share the module's check)
    kinds = {"mve_gemm_packed", "mve_dense_packed"} if helium else {packed}
    refused = [n.name for n in graph.nodes if before[n.name].kind in kinds]
    if op == "conv2d" and not helium:  # the bias is in this bound: one large enough overflows the scaled sums
        b = graph.constants[node.inputs[2]].copy()
        b[0] = 2**29
        graph.constants[node.inputs[2]] = b
        refused = [node.name]
    else:  # the bias is not (the sums hold the products only): the same check, of a bound 2^20 times larger
        module = mve_gemm_packed if helium else dense_packed
        real = module.scaled_bound_refusal
        monkeypatch.setattr(module, "scaled_bound_refusal", lambda bound, bits: real(bound << 20, bits))
    sel = _select(graph, plan, features, "size")
    listed = _packed_fallbacks(graph, sel)
    assert node.name in refused and [f["layer"] for f in listed] == refused
    for f in listed:
        s = sel[f["layer"]]
        assert s.optimized and "packed" not in s.kind and f["kernel"] == s.kind
        was = before[f["layer"]].kind
        assert f["reason"].startswith(f"not {was}: accumulator bound") and "exceeds int32" in f["reason"]
        assert f"not {was}" in s.describe()


def test_a_packed_layer_refused_for_its_weight_range_is_listed(tmp_path):
    """Any refusal of a packed variant loses the layer its packing, not only the bound: 4-bit weights with a code
    outside the 4-bit range run the int8-weight kernel, listed with the packed variant's reason."""
    graph, plan = _graph(tmp_path, CHAINS["a"](0), 4)
    node = next(n for n in graph.nodes if n.op == "dense")
    w = graph.constants[node.inputs[1]].copy()
    w[0, 0] = 100
    graph.constants[node.inputs[1]] = w
    sel = _select(graph, plan, ("dsp",), "size")
    assert sel[node.name].optimized and "packed" not in sel[node.name].kind
    listed = {f["layer"]: f for f in kernel_fallbacks(graph, sel)}
    assert listed[node.name]["reason"] == "not dense_packed: weights outside the signed 4-bit range"


def test_dense_pairs_refused_for_their_bound_or_range_are_listed(tmp_path):
    """dense_asm_int8 (two rows per int16 half) refuses a second row whose accumulator could reach 2^23, and a
    weight of -128 over a negative one: the layer runs dense_int8, slower, and the fallbacks say why."""
    graph, plan = _graph(tmp_path, fc_chain(5, (40, 8, 6)))
    node = next(n for n in graph.nodes if n.op == "dense")
    assert _select(graph, plan, ("dsp",), "balanced")[node.name].kind == "dense_asm_int8"
    bias = graph.constants[node.inputs[2]].copy()
    big = bias.copy()
    big[1] = 2**23
    graph.constants[node.inputs[2]] = big
    sel = _select(graph, plan, ("dsp",), "balanced")
    assert sel[node.name].kind == "dense_int8"
    listed = kernel_fallbacks(graph, sel)
    assert [f["layer"] for f in listed] == [node.name] and listed[0]["reason"].startswith("not dense_asm_int8: accumulator bound")
    graph.constants[node.inputs[2]] = bias
    w = graph.constants[node.inputs[1]].copy()
    w[0, 3], w[1, 3] = -5, -128
    graph.constants[node.inputs[1]] = w
    listed = kernel_fallbacks(graph, _select(graph, plan, ("dsp",), "size"))
    assert [f["layer"] for f in listed] == [node.name] and "-128 over a negative one" in listed[0]["reason"]


def test_variants_that_only_use_free_ram_are_no_fallbacks(tmp_path, monkeypatch):
    """dw3_int8_ram and mve_dwc take a layer only where their buffers fit bytes that are free anyway (an arena
    gap; mve_dwc also the stack budget): by design they never add RAM, and the lean kernel below them (dw3_int8,
    mve_dw) is the layer's kernel. Without a gap the layer is not listed (else every M55 build of KWS would
    list all its depthwise layers)."""
    from edgekit.backends.cortexm.kernels import mve_dwc

    graph, plan = _graph(tmp_path, CHAINS["e"](0))
    planes = [n for n, s in _select(graph, plan, ("dsp", "mve"), "balanced").items() if s.kind == "mve_dwc"]
    assert planes
    monkeypatch.setattr(mve_dwc, "arena_gap", lambda plan, index, size: None)
    monkeypatch.setattr(mve_dwc, "STACK_SCRATCH_LIMIT", 0)
    sel = _select(graph, plan, ("dsp", "mve"), "balanced")
    assert all(sel[n].kind == "mve_dw" for n in planes)
    assert not any(f["layer"] in planes for f in kernel_fallbacks(graph, sel))


def test_a_packed_fallback_reaches_the_build_line_the_report_and_the_manifest(tmp_path, monkeypatch, capsys):
    """End to end: a 4-bit model whose packed convolutions are refused lists them on the build line, in
    ``edgekit report`` (text and JSON) and in manifest.json's kernel_fallbacks."""
    from edgekit.api import build
    from edgekit.backends import backend_named
    from edgekit.backends.cortexm.kernels import conv2d_gemm_packed
    from edgekit.cli import main
    from edgekit.frontends.tflite import importer

    monkeypatch.setattr(importer, "import_tflite", _narrowing_import(4))
    monkeypatch.setattr(conv2d_gemm_packed, "scaled_bound_refusal",
                        lambda bound, bits: f"accumulator bound {int(bound)} (forced here) exceeds int32")
    model = tmp_path / "a.tflite"
    model.write_bytes(CHAINS["a"](0))
    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out, optimize="size")
    convs = [r["name"] for r in res.manifest.layers if r["op"] == "conv2d" and "depthwise" != r.get("kind")]
    listed = res.manifest.kernel_fallbacks
    assert convs and {f["layer"] for f in listed} == set(convs)
    assert all(f["reason"].startswith("not conv2d_gemm_packed: accumulator bound") for f in listed)
    assert json.loads((out / "manifest.json").read_text())["kernel_fallbacks"] == listed
    line = backend_named("cortexm").build_summary(res)
    assert f"{len(listed)} layer(s) on a slower kernel: {listed[0]['layer']} ({listed[0]['kernel']}: " \
           "not conv2d_gemm_packed: accumulator bound" in line
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernel_fallbacks"] == listed
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(name in text.split("on a slower kernel")[1] for name in convs)
