"""report.html of an FPGA (hls4ml) build: the precisions of every layer, the estimated
resources against the part and the estimated latency (``templates/report/hls.html.j2``)."""
from __future__ import annotations

from pathlib import Path

from ... import pages
from ...manifest import Manifest
from .boards import RESOURCE_KINDS
from .build import load_estimates, project_line

#: how the page names the part's resources
RESOURCE_LABELS = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18": "BRAM18", "uram": "URAM"}


def report_page(build_dir: Path, manifest: Manifest) -> str:
    est = load_estimates(build_dir, manifest)
    layers = est["layers"]
    capacity = est["part_resources"]
    regions = [{"label": RESOURCE_LABELS.get(kind, kind), "capacity": capacity[kind], "unit": "",
                "parts": [("estimated use", est["totals"].get(kind, 0))]}
               for kind in RESOURCE_KINDS if capacity.get(kind)]
    names = [r["layer"] for r in layers]
    plots = {
        "capacity": pages.capacity_chart("resources", regions),
        "lut": pages.bar_chart("lut", names, [r["lut"] for r in layers], "LUTs (estimate)",
                               [f"{r['lut']:,} LUT, {r['ff']:,} FF, {r['dsp']} DSP, {r['bram18']} BRAM18"
                                for r in layers]),
        "latency": pages.bar_chart("latency", names, [r["latency_cycles"] or 0 for r in layers],
                                   f"clock cycles (estimate; clock {est['clock_period_ns']} ns)",
                                   ["-" if r["latency_cycles"] is None else f"{r['latency_cycles']}"
                                    for r in layers], color=pages.PALETTE[2]),
    }
    return pages.render("hls.html.j2", manifest=manifest, build_dir=build_dir, project=project_line(build_dir, manifest),
                        est=est, precision=manifest.precision, plots=plots, resource_labels=RESOURCE_LABELS,
                        verify=pages.verify_section(build_dir), validation=pages.validation_section(build_dir))
