"""The HTML pages in a real browser: headless Chromium (Debian's) opens a Cortex-M build's
report.html and profile.html, an FPGA build's report.html and a search's report.html from
file://, with no console message, the plots present in the DOM; screenshots are kept as
test artifacts in test-artifacts/report-browser/ (ignored by git; EDGEKIT_TEST_ARTIFACTS
moves them).

Console errors: the pages have no JavaScript at all (checked), and Chromium's log
(``--enable-logging=stderr --v=0``, lines tagged ``CONSOLE``) must be empty of page messages.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.api import build, profile, report, verify
from edgekit.nas.rendering import report_html
from helpers.fixed_models import fixed_mlp
from helpers.pages import LATENCIES_MS, Dom, search_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium for the browser test "
                                "(scripts/setup.sh installs it: apt-get install chromium)")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("EDGEKIT_TEST_ARTIFACTS", REPO / "test-artifacts")) / "report-browser"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def open_in_chromium(page: Path, name: str, tmp_path: Path, height: int = 2400) -> Dom:
    """The page's DOM after Chromium loaded it; fails on any console message, a script, or a
    resource the page would fetch; saves a full-width screenshot as ARTIFACTS/<name>.png."""
    profile_dir = tmp_path / f"chromium-{name}"
    dump = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dump.returncode == 0, dump.stderr[-2000:]
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    dom = Dom(dump.stdout)
    assert dom.count("html") == 1 and dom.count("script") == 0
    # self-contained: anchors on the page and the build's other page, nothing to fetch
    assert all(link.startswith("#") or link in ("profile.html", "report.html") for link in dom.links), dom.links
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", f"--screenshot={shot}",
                    f"--window-size=1280,{height}", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 20_000, "no screenshot (or a blank one)"
    return dom


@pytest.fixture(scope="module")
def cortexm_build(tmp_path_factory) -> Path:
    """The fixed MLP on the M4, verified and profiled, with a validation record beside it."""
    d = tmp_path_factory.mktemp("pages")
    out = d / "build"
    build(fixed_mlp(d / "fixed_mlp.onnx"), "cortex-m4", "mps2-an386", out)
    assert verify(out, count=8).ok
    profile(out, count=2)
    # the keys of `edgekit validate`'s record that the page reads: a 4-class confusion matrix
    (out / "validate.json").write_text(json.dumps({
        "confusion_matrix": [[9, 1, 0, 0], [0, 8, 2, 0], [1, 0, 9, 0], [0, 0, 1, 9]],
        "classes": ["walk", "run", "stand", "badminton"], "accuracy": 0.875}))
    return out


def test_cortexm_report_page_in_chromium(cortexm_build, tmp_path):
    rep = report(cortexm_build)
    assert rep.page == cortexm_build / "report.html"
    dom = open_in_chromium(rep.page, "cortexm-report", tmp_path, height=3600)
    # capacity, arena (two panels, one SVG), flash per layer, instructions per layer, confusion matrix
    assert dom.count("svg") == 5, dom.tags
    text = dom.all_text
    for heading in ("Flash and RAM against the board", "Arena over the inference", "Flash per layer",
                    "Instructions per layer", "Verification", "Validation"):
        assert heading in text, heading
    assert "Not profiled" not in text and "Not verified" not in text and "PASS" in text
    assert "Accuracy 0.8750 on 40 samples, 4 classes" in text and "badminton" in text
    manifest = json.loads((cortexm_build / "manifest.json").read_text())
    for name, p in manifest["memory_plan"]["tensors"].items():  # every arena buffer named on the page
        if p["buffer"] == "arena":
            assert p["tensor"] in text and name in text
    for layer in manifest["layers"]:
        assert layer["name"] in text


def test_cortexm_profile_page_in_chromium(cortexm_build, tmp_path):
    page = cortexm_build / "profile.html"
    dom = open_in_chromium(page, "cortexm-profile", tmp_path, height=2600)
    assert dom.count("svg") == 3, dom.tags  # instructions, estimated time, instruction classes
    data = json.loads((cortexm_build / "profile.json").read_text())
    text = dom.all_text
    for row in data["layers"]:
        assert row["label"] in text and f"{row['instructions']:,}" in text
    assert f"{data['total']['instructions']:,} instructions per inference" in text


def test_fpga_report_page_in_chromium(tmp_path):
    pytest.importorskip("hls4ml")
    import torch

    from edgekit.qat import export_qonnx
    from helpers.brevitas_models import make_mlp

    onnx = export_qonnx(make_mlp("int8-pow2", input_shape=(16,), hidden=(32, 16), n_out=5), torch.zeros(1, 16),
                        tmp_path / "mlp.onnx")
    out = tmp_path / "fpga"
    build(onnx, "fpga", "pynq-z2", out)
    rep = report(out)
    dom = open_in_chromium(rep.page, "fpga-report", tmp_path, height=2400)
    assert dom.count("svg") == 3, dom.tags  # resources against the part, LUTs and cycles per layer
    est = json.loads((out / "estimates.json").read_text())
    text = dom.all_text
    assert f"Resources against {est['part']}" in text and "Precisions" in text
    for row in est["layers"]:
        assert row["layer"] in text
    assert ("Fits" if est["fits"] else "DOES NOT FIT") in text


def test_search_page_in_chromium(tmp_path):
    summary, rows, front, config = search_results()
    page = tmp_path / "report.html"
    page.write_text(report_html(summary, rows, front, config))
    dom = open_in_chromium(page, "search-report", tmp_path, height=1800)
    assert dom.count("svg") == 1
    text = dom.all_text
    # every trial is a marker in both panels (matplotlib draws each point as one <use>)
    assert dom.count("use") >= 2 * len(LATENCIES_MS), dom.tags
    # latency spans 0.15 .. 1075 ms: a log axis with plain tick labels up to 1000
    assert "1000" in dom.text and "0.2" in dom.text  # tick labels are text nodes of their own
    assert "budget 20 ms" in text and "budget 64 KiB" in text
    assert "chance (majority class) 0.250" in text
    for r in rows:
        assert r["arch"] in text
