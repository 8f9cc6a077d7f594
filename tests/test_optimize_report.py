"""The build choices as the user sees them. --optimize (issue 16: "the choice per layer shown in the
report"): the manifest records the objective, the build line, the text report, report.json and report.html
name it, and each layer shows its kernel variant, its constants' flash and what the objective decided for
its weights. --io-buffers ("report what each choice costs"): the page and the exported project's README say
what one inference needs in RAM and where the input and output are, as the build line and the text report do."""
from __future__ import annotations

import json
import subprocess
import sys

from markupsafe import escape  # Jinja's own escaping, as the page's

from edgekit.api import build, report
from edgekit.backends.cortexm.export import export
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.build import build_summary
from edgekit.ir.graph import Graph

from test_flash_goal import pointwise_chain


def _flash(res) -> int:
    return res.manifest.memory_breakdown["flash"]["total"]


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:3].strip().isdigit()]


def test_each_layer_shows_what_optimize_chose(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(pointwise_chain())
    size = build(model, None, "mps2-an386", tmp_path / "size", optimize="size")
    assert size.manifest.optimize == "size"
    assert "(--optimize size)" in build_summary(size)
    text = report(tmp_path / "size").text()
    assert "(optimized kernels, --optimize size)" in text.splitlines()[0]
    head = text.splitlines()[1]
    assert head.rstrip().endswith("kernel") and " flash B " in head
    variants = size.manifest.kernel_variants
    rows = _rows(text)
    for row, layer in zip(rows, size.manifest.layers):
        assert row.split()[-1] == variants[layer["name"]], row  # size: the objective alone decided
    rep = json.loads((tmp_path / "size" / "report.json").read_text())
    assert rep["kernels"] == "optimized" and rep["optimize"] == "size"
    assert all(L["kernel_variant"] == variants[L["name"]] and "optimize_choice" not in L for L in rep["layers"])
    # a layer's flash is its constants in the linked firmware: the weights at least, int8 or wider
    assert all(L["flash_bytes"] >= L["weight_bytes"] - 4 * L["output_shape"][-1] for L in rep["layers"]
               if L["weight_bytes"])

    # balanced with a goal that int8 weights meet and int16 weights everywhere do not: some layers widened,
    # some kept at int8, each saying so
    params = kernel_registry.int8_parameter_bytes(Graph.load(tmp_path / "size"))
    monkeypatch.setattr(kernel_registry, "BALANCED_EXTRA_FLASH", 10.0)

    def goal_at(flash: int) -> None:
        monkeypatch.setattr(kernel_registry, "FLASH_GOAL_CODE", flash - int(kernel_registry.FLASH_GOAL_PARAMS * params))

    goal_at(10**7)
    wide = build(model, None, "mps2-an386", tmp_path / "wide", optimize="balanced")
    goal_at((_flash(size) + _flash(wide)) // 2)
    mid = build(model, None, "mps2-an386", tmp_path / "mid", optimize="balanced")
    choices = {L["name"]: L.get("optimize_choice") for L in mid.manifest.layers}
    widened = [n for n, c in choices.items() if c and c.startswith("int16 weights: +")]
    kept = [n for n, c in choices.items() if c and c.startswith("int8 weights: int16 (+")]
    assert widened and kept, choices
    rep = report(tmp_path / "mid")
    text = rep.text()
    assert "(optimized kernels, --optimize balanced)" in text.splitlines()[0]
    for row in _rows(text):
        name = row.split()[1]
        if choices.get(name):
            assert row.endswith(f"{mid.manifest.kernel_variants[name]} ({choices[name]})"), row
    by_name = {L["name"]: L for L in json.loads((tmp_path / "mid" / "report.json").read_text())["layers"]}
    sizes = {L["name"]: L for L in json.loads((tmp_path / "size" / "report.json").read_text())["layers"]}
    for n in widened:  # int16 weights cost flash against the size build's int8 ones
        assert by_name[n]["flash_bytes"] > sizes[n]["flash_bytes"]
    page = (tmp_path / "mid" / "report.html").read_text()
    assert "(--optimize balanced)" in page and str(escape(choices[kept[0]])) in page


def test_reference_kernels_refuse_an_optimize_objective(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(pointwise_chain())
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(model), "--board", "mps2-an386",
                           "--kernels", "reference", "--optimize", "speed", "-o", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert "--optimize speed" in proc.stderr and "--kernels reference" in proc.stderr
    assert not (tmp_path / "b").exists()
    ref = build(model, None, "mps2-an386", tmp_path / "ref", kernels="reference")
    assert ref.manifest.optimize is None and "--optimize" not in build_summary(ref)
    assert "(reference kernels)" in report(tmp_path / "ref").text().splitlines()[0]


def test_the_page_says_what_each_io_choice_costs(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(pointwise_chain())
    for io in ("arena", "caller"):
        res = build(model, None, "mps2-an386", tmp_path / io, io_buffers=io)
        peak = f"peak RAM of an inference {res.manifest.memory['peak_ram_bytes']:,} B"
        assert peak in build_summary(res) and peak in report(tmp_path / io).text().splitlines()[0]
        page = (tmp_path / io / "report.html").read_text()
        assert peak in page
        where = ("input and output inside the arena" if io == "arena"
                 else f"the caller's input and output {res.manifest.memory['io_buffer_bytes']:,} B")
        assert str(escape(where)) in page, where
        # the exported project's README says it too, with the caller's buffers' bytes
        readme = (export(tmp_path / io, tmp_path / f"{io}-project") / "README.md").read_text()
        mem = res.manifest.memory
        io_part = f", your input and output buffers' {mem['io_buffer_bytes']:,}" if io == "caller" else ""
        stack = mem["peak_ram_bytes"] - res.manifest.arena_bytes - mem["io_buffer_bytes"]
        assert (f"One inference needs {mem['peak_ram_bytes']:,} bytes of RAM on mps2-an386: the arena's "
                f"{res.manifest.arena_bytes:,}{io_part} and {stack:,} of stack") in readme, readme
