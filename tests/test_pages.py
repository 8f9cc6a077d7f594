"""The pages' content and plumbing without a browser: deterministic plots, the search plot's
axes, what `report` and `profile` print, verify's record, a rebuild that keeps (same firmware)
or removes (other firmware) the profile, and no markup assembled in Python."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgekit.api import build, profile, report, verify
from edgekit.backends.cortexm.report import report_page
from edgekit.manifest import load_manifest
from edgekit.nas.rendering import LOG_SPREAD, pareto_svg, report_html
from helpers.fixed_models import fixed_mlp
from helpers.pages import search_results

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixed_build(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pages")
    out = d / "build"
    build(fixed_mlp(d / "fixed_mlp.onnx"), "cortex-m4", "mps2-an386", out, kernels="reference")
    return out


def _cli(capsys, *args) -> tuple[int, str, str]:
    from edgekit.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_pages_are_deterministic_and_undated(fixed_build):
    manifest = load_manifest(fixed_build)
    first, second = report_page(manifest, fixed_build), report_page(manifest, fixed_build)
    assert first == second
    assert "<dc:date>" not in first and "<?xml" not in first and first.count("<svg") == 3
    summary, rows, front, config = search_results()
    assert pareto_svg(rows, front, config) == pareto_svg(rows, front, config)
    # two plots on a page never share an id (each plot salts its ids with its name)
    ids = re.findall(r'\bid="([^"]+)"', first)
    assert len(ids) == len(set(ids))


def test_search_plot_turns_logarithmic_only_for_a_wide_spread():
    summary, rows, front, config = search_results()
    wide = pareto_svg(rows, front, config)
    narrow_rows = [dict(r, latency_ms=1.0 + r["number"] * 0.5) for r in rows]  # 1 .. 6.5 ms: linear
    narrow = pareto_svg(narrow_rows, front, config)
    assert max(r["latency_ms"] for r in rows) / min(r["latency_ms"] for r in rows) > LOG_SPREAD
    # a log axis writes 1000 and 0.2 as tick labels; a linear 0..8 ms axis writes neither
    assert ">1000<" in wide and ">0.2<" in wide
    assert ">1000<" not in narrow and ">0.2<" not in narrow
    page = report_html(summary, rows, front, config)
    assert "chance (majority class) 0.250" in page and "budget 64 KiB" in page
    assert "the 2 over budget before training" in page
    no_chance = dict(summary)
    del no_chance["chance"]
    assert "chance (majority class)" not in report_html(no_chance, rows, front, config)


def test_report_writes_its_page_and_says_where(fixed_build, capsys):
    code, out, err = _cli(capsys, "report", fixed_build)
    page = fixed_build / "report.html"
    assert code == 0 and err == "" and out.splitlines()[-1] == f"report page: {page}"
    assert page.is_file() and "Not profiled" in page.read_text() and "Not verified" in page.read_text()
    code, out, _ = _cli(capsys, "report", fixed_build, "--json")
    assert code == 0 and json.loads(out)["page"] == str(page)


def test_verify_records_and_report_shows_it(fixed_build):
    rep = verify(fixed_build, count=4, skip=("qemu",))
    record = json.loads((fixed_build / "verify.json").read_text())
    assert record == json.loads(json.dumps(rep.to_json()))
    html = report(fixed_build).page.read_text()
    assert "Not verified" not in html and "host C" in html


def test_validate_record_shown_or_its_problem_named(fixed_build):
    path = fixed_build / "validate.json"
    try:
        path.write_text(json.dumps({"confusion_matrix": [[5, 1], [2, 4]], "classes": ["no", "yes"],
                                    "accuracy": 0.75}))
        html = report(fixed_build).page.read_text()
        assert "Accuracy 0.7500 on 12 samples, 2 classes" in html and html.count("<svg") == 4
        path.write_text(json.dumps({"task": "classification", "confusion_matrix": [[5, 0, 1], [0, 6, 0], [2, 0, 4]],
                                    "accuracy": 0.8333, "float_accuracy": 0.8889, "accuracy_drop": 5.56,
                                    "float_reference": "qonnx execution", "firmware_exact": True}))
        html = report(fixed_build).page.read_text()  # no class names: the class ids
        assert "Accuracy 0.8333 on 18 samples, 3 classes; float reference 0.8889 (drop 5.56 points)" in html
        assert "exact in every stage" in html and html.count("<svg") == 4
        path.write_text(json.dumps({"task": "regression", "samples": 7, "rmse": 0.125, "cosine": 0.99,
                                    "max_error": 0.5}))
        html = report(fixed_build).page.read_text()
        assert "RMSE" in html and "0.1250" in html and html.count("<svg") == 3
        path.write_text(json.dumps({"confusion_matrix": [[1, 2, 3]], "classes": []}))
        html = report(fixed_build).page.read_text()
        assert "no square confusion_matrix" in html
        path.write_text("{not json")
        assert "validate.json:" in report(fixed_build).page.read_text()
    finally:
        path.unlink(missing_ok=True)


def test_profile_prints_its_files_and_a_rebuild_keeps_them_for_the_same_firmware(fixed_build, tmp_path, capsys):
    code, out, err = _cli(capsys, "profile", fixed_build, "--count", "2")
    assert code == 0, err
    assert out.splitlines()[-1] == f"wrote {fixed_build / 'profile.json'}, {fixed_build / 'profile.html'}"
    profiled = json.loads((fixed_build / "manifest.json").read_text())["profile"]
    model = Path(load_manifest(fixed_build).source)
    code, out, err = _cli(capsys, "build", model, "--target", "cortex-m4", "--board", "mps2-an386",
                          "--kernels", "reference", "-o", fixed_build)
    assert code == 0, err
    assert "kept profile.json, profile.html" in out and "the firmware is the same" in out
    assert (fixed_build / "profile.html").is_file()
    assert json.loads((fixed_build / "manifest.json").read_text())["profile"] == profiled
    # other kernels, other firmware: the profile no longer describes it, and the build says so
    code, out, err = _cli(capsys, "build", model, "--target", "cortex-m4", "--board", "mps2-an386", "-o", fixed_build)
    assert code == 0, err
    assert "removed profile.json, profile.html" in out and "`edgekit profile`" in out
    assert not (fixed_build / "profile.html").exists()
    assert json.loads((fixed_build / "manifest.json").read_text()).get("profile") is None


@pytest.mark.parametrize("module", ["edgekit/backends/cortexm/report.py", "edgekit/backends/hls/report.py",
                                    "edgekit/backends/cortexm/profile/report.py", "edgekit/nas/rendering.py",
                                    "edgekit/pages.py"])
def test_no_markup_assembled_in_python(module):
    """HTML and SVG come from the templates and matplotlib, not from strings in the code."""
    source = (REPO / module).read_text()
    assert not re.search(r"<(html|body|svg|rect|circle|line|text|table|tr|td|th|p|h[1-6])[\s>/]", source), module


def test_search_page_with_a_best_model_and_checked_front():
    summary, rows, front, config = search_results()
    top = front[0]
    summary = dict(summary, best={"number": top["number"], "arch": top["arch"], "model_origin": "trial model",
                                  "int_test_accuracy": 0.9, "ram_bytes": top["ram_bytes"],
                                  "flash_bytes": top["flash_bytes"], "arena_bytes": 2048,
                                  "measured_latency_ms": 17.5, "measured_instructions": 1_234_567,
                                  "export_dir": "nas_out/best", "emulated_board": "mps2-an386"},
                   checked=[{"number": top["number"], "ok": True, "measured_latency_ms": 17.5,
                             "cost_model_error": -0.028, "int_test_accuracy": 0.9},
                            {"number": front[1]["number"], "ok": False, "problems": ["over the latency budget"]}])
    page = report_html(summary, rows, front, config)
    assert "Best feasible model" in page and "1,234,567" in page and "-2.80%" in page
    assert "rejected: over the latency budget" in page and "No feasible model" not in page
    from edgekit.nas.rendering import report_markdown

    md = report_markdown(summary, rows, front, config)
    assert "| 0.9000 | " in md and "`nas_out/best`" in md and "rejected: over the latency budget" in md


def test_report_page_names_layers_on_a_slower_kernel(fixed_build):
    manifest = load_manifest(fixed_build)
    manifest.kernel_fallbacks = [{"layer": "Gemm_1", "kernel": "reference", "reason": "an odd reason"}]
    assert "Gemm_1 (reference: an odd reason)" in report_page(manifest, fixed_build)


def test_report_page_of_a_manifest_without_the_memory_map(fixed_build):
    """A build directory from an older edgekit (no fit report, no linked breakdown) still gets its page."""
    manifest = load_manifest(fixed_build)
    manifest.fit, manifest.memory_breakdown = None, None
    page = report_page(manifest, fixed_build)
    assert "no memory map of the board" in page and "Arena over the inference" in page
