"""What a Cortex-M build says about its memory and its kernels (issue 16): ``edgekit verify --json``'s
``memory.peak_ram_bytes`` and ``memory.flash_bytes``, and no silent degradation (a layer on a slower
kernel is named with the reason in the build line, ``edgekit report`` and the manifest)."""
from __future__ import annotations

import json

import pytest

from test_kernels_dsp import chain_a

from edgekit.backends.cortexm.kernels import registry as kernel_registry


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "a0.tflite"
    path.write_bytes(chain_a(0))
    return path


def _elf_flash_bytes(elf) -> int:
    """.isr_vector + .text + .rodata + .ARM.exidx + .data of the ELF, read with pyelftools (not arm-none-eabi-size)."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        sections = {s.name: s["sh_size"] for s in ELFFile(f).iter_sections()}
    return sum(sections.get(n, 0) for n in (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data"))


@pytest.mark.parametrize("io_buffers", ["arena", "caller"])
def test_verify_json_reports_peak_ram_and_flash(model, tmp_path, capsys, io_buffers):
    """Input and output inside the arena (the default) count in its bytes; caller-owned ones on top of it."""
    from edgekit.api import build
    from edgekit.cli import main
    from edgekit.ir.graph import Graph

    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out, io_buffers=None if io_buffers == "arena" else io_buffers)
    assert res.manifest.io_buffers == io_buffers
    assert main(["verify", str(out), "--count", "4", "--json"]) == 0
    mem = json.loads(capsys.readouterr().out)["memory"]
    graph = Graph.load(out)
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    io = x.nbytes + y.nbytes if io_buffers == "caller" else 0
    assert mem["io_buffers"] == io_buffers and mem["io_buffer_bytes"] == io
    assert mem["peak_ram_stack"] == "measured on the board" and mem["inference_stack_bytes"] > 0
    assert mem["peak_ram_bytes"] == res.manifest.arena_bytes + io + mem["inference_stack_bytes"]
    # the firmware wrote the whole planned arena: with the input inside it, the input's bytes too
    assert res.manifest.arena_bytes - 3 <= mem["arena_touched_bytes"] <= res.manifest.arena_bytes
    assert mem["flash_bytes"] == _elf_flash_bytes(out / "firmware.elf") == res.manifest.memory["flash_bytes"]
    # without the firmware stage the stack is the static analysis', and says so
    assert main(["verify", str(out), "--count", "4", "--skip", "qemu", "--json"]) == 0
    host_only = json.loads(capsys.readouterr().out)["memory"]
    assert host_only["peak_ram_stack"] == "static analysis"
    assert host_only["peak_ram_bytes"] == (res.manifest.arena_bytes + io
                                           + res.manifest.memory["inference_stack_static_bytes"])
    assert host_only["peak_ram_bytes"] == res.manifest.memory["peak_ram_bytes"]  # what the build line said


def test_a_layer_on_a_slower_kernel_is_named_with_the_reason(model, tmp_path, monkeypatch):
    """Scratch buffers that fit neither a free arena gap nor the stack budget send their layers to the
    reference kernel: the build line, the report (text and JSON) and the manifest name them and why."""
    from edgekit.api import build, report
    from edgekit.backends import backend_named

    monkeypatch.setattr(kernel_registry, "arena_gap", lambda plan, index, size: None)
    monkeypatch.setattr(kernel_registry, "STACK_SCRATCH_LIMIT", 16)
    out = tmp_path / "b"
    res = build(model, "cortex-m4", "mps2-an386", out)
    fallbacks = res.manifest.kernel_fallbacks
    assert fallbacks and all(f["kernel"] == "reference" and "fits neither a free arena gap nor the stack budget"
                             in f["reason"] for f in fallbacks)
    scratchy = {r["name"] for r in res.manifest.layers if r.get("kernel", "").startswith("reference (scratch")}
    assert {f["layer"] for f in fallbacks} == scratchy
    line = backend_named("cortexm").build_summary(res)
    assert f"{len(fallbacks)} layer(s) on a slower kernel: {fallbacks[0]['layer']} (reference: scratch of" in line
    assert json.loads((out / "manifest.json").read_text())["kernel_fallbacks"] == fallbacks
    text = (out / "report.txt").read_text()
    assert all(f["layer"] in text.split("on a slower kernel")[1] for f in fallbacks)
    assert json.loads((out / "report.json").read_text())["kernel_fallbacks"] == fallbacks
    assert report(out) is not None
    # without the limits: no fallback, and the build line says nothing of one
    monkeypatch.undo()
    res = build(model, "cortex-m4", "mps2-an386", tmp_path / "c")
    assert res.manifest.kernel_fallbacks == []
    assert "slower kernel" not in backend_named("cortexm").build_summary(res)


def test_reference_kernels_and_cores_without_dsp_are_not_fallbacks(model, tmp_path):
    from edgekit.api import build

    for target, board, kernels in (("cortex-m4", "mps2-an386", "reference"), ("cortex-m3", "mps2-an385", None)):
        res = build(model, target, board, tmp_path / target, kernels=kernels)
        assert res.manifest.kernel_fallbacks == [], (target, res.manifest.kernel_fallbacks)
