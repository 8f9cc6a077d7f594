"""Per-layer report of a Cortex-M build: text, JSON and a self-contained HTML page with the memory plan.

Everything comes from the build manifest (layers and memory plan), so ``edgekit report``
works on any Cortex-M build directory.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from ...manifest import Manifest


def layer_kind(node) -> str:
    """What a report calls a layer: its IR operator, except that a depthwise conv2d is ``depthwise``."""
    return "depthwise" if node.op == "conv2d" and node.attrs.get("depthwise") else node.op


def _kind(layer: dict) -> str:
    return layer.get("kind", layer["op"])  # builds made before "kind" was recorded


def _buffers(manifest: Manifest) -> list[dict]:
    seen, out = set(), []
    for name, p in manifest.memory_plan["tensors"].items():
        key = (p["tensor"], p["buffer"])
        if p["buffer"] == "arena" and key not in seen:
            seen.add(key)
            out.append(p)
    return out


def memory_timeline(manifest: Manifest) -> list[int]:
    """Arena bytes live during each layer (producer .. last consumer, inclusive)."""
    bufs = _buffers(manifest)
    return [sum(b["size"] for b in bufs if b["first"] <= i <= b["last"]) for i in range(len(manifest.layers))]


def report_json(manifest: Manifest) -> dict:
    timeline = memory_timeline(manifest)
    layers = [dict(layer, arena_live_bytes=live) for layer, live in zip(manifest.layers, timeline)]
    mem = manifest.memory
    return {
        "target": manifest.target, "board": manifest.board, "macs": manifest.macs,
        "weight_bytes": manifest.weight_bytes, "arena_bytes": manifest.arena_bytes,
        "arena_lower_bound": manifest.memory_plan.get("lower_bound"),
        "planner": manifest.memory_plan.get("strategy"),
        "in_place_layers": manifest.memory_plan.get("inplace", []),
        "flash_bytes": mem["flash_bytes"], "ram_bytes": mem["ram_bytes"], "layers": layers,
    }


def _shape(s) -> str:
    return "x".join(map(str, s)) or "1"


def report_text(manifest: Manifest) -> str:
    rep = report_json(manifest)
    layers = rep["layers"]

    def width(title: str, values, least: int) -> int:  # a column as wide as its longest entry, plus a space
        return max([least, len(title) + 1] + [len(v) + 1 for v in values])

    w_name = width("layer", (L["name"] for L in layers), 24)
    w_op = width("op", (_kind(L) for L in layers), 11)
    w_in = width("input", (_shape(L["input_shape"]) for L in layers), 14)
    w_out = width("output", (_shape(L["output_shape"]) for L in layers), 14)
    head = (f"{'#':>3}  {'layer':<{w_name}}{'op':<{w_op}}{'input':<{w_in}}{'output':<{w_out}}{'MACs':>10}"
            f"{'weights B':>11}{'out B':>8}  {'buffer':<8}{'offset':>8}{'arena live':>12}")
    lines = [f"edgekit build for {rep['target']} on {rep['board']}: {rep['macs']} MACs, weights {rep['weight_bytes']} B, "
             f"arena {rep['arena_bytes']} B (lower bound {rep['arena_lower_bound']} B, {rep['planner']}), "
             f"flash {rep['flash_bytes']} B, RAM {rep['ram_bytes']} B", head, "-" * len(head)]
    for i, layer in enumerate(layers):
        off = "" if layer["arena_offset"] is None else str(layer["arena_offset"])
        lines.append(f"{i:>3}  {layer['name']:<{w_name}}{_kind(layer):<{w_op}}{_shape(layer['input_shape']):<{w_in}}"
                     f"{_shape(layer['output_shape']):<{w_out}}{layer['macs']:>10}{layer['weight_bytes']:>11}"
                     f"{layer['output_bytes']:>8}  {layer['buffer'] or 'alias':<8}{off:>8}{layer['arena_live_bytes']:>12}")
    if rep["in_place_layers"]:
        lines.append(f"in place: {', '.join(rep['in_place_layers'])}")
    return "\n".join(lines)


def report_html(manifest: Manifest) -> str:
    """The table plus an SVG of the arena: x = layer, y = byte offset, one box per buffer."""
    rep = report_json(manifest)
    n = max(len(rep["layers"]), 1)
    arena = max(rep["arena_bytes"], 1)
    w, h, pad = 900, 320, 40
    boxes = []
    for b in _buffers(manifest):
        x0 = pad + (b["first"] + 0.5 if b["first"] >= 0 else 0) * (w - 2 * pad) / n
        x1 = pad + (b["last"] + 1) * (w - 2 * pad) / n
        y0 = h - pad - (b["offset"] + b["size"]) * (h - 2 * pad) / arena
        bh = b["size"] * (h - 2 * pad) / arena
        boxes.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{max(bh, 1):.1f}" '
                     f'fill="#4c78a8" fill-opacity="0.6" stroke="#1f3b57"><title>{html.escape(b["tensor"])}: '
                     f'{b["size"]} B at {b["offset"]}, layers {b["first"]}..{b["last"]}</title></rect>')
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(r['name'])}</td><td>{r['op']}</td><td>{r['input_shape']}</td>"
        f"<td>{r['output_shape']}</td><td>{r['macs']}</td><td>{r['weight_bytes']}</td><td>{r['output_bytes']}</td>"
        f"<td>{r['arena_offset'] if r['arena_offset'] is not None else ''}</td><td>{r['arena_live_bytes']}</td></tr>"
        for i, r in enumerate(rep["layers"]))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgekit report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 6px;text-align:right}}</style></head><body>
<h1>edgekit build report</h1>
<p>{rep['target']} on {rep['board']}: {rep['macs']} MACs, weights {rep['weight_bytes']} B, arena {rep['arena_bytes']} B
(lower bound {rep['arena_lower_bound']} B; {html.escape(str(rep['planner']))}), flash {rep['flash_bytes']} B,
RAM {rep['ram_bytes']} B.</p>
<h2>Arena over time</h2>
<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
<text x="{pad}" y="{h - 10}">layer 0</text><text x="{w - pad - 60}" y="{h - 10}">layer {n - 1}</text>
<text x="2" y="{pad}">{arena} B</text><text x="2" y="{h - pad}">0</text>
{''.join(boxes)}
</svg>
<h2>Layers</h2>
<table><tr><th>#</th><th>layer</th><th>op</th><th>input</th><th>output</th><th>MACs</th><th>weight B</th>
<th>output B</th><th>arena offset</th><th>arena live B</th></tr>{rows}</table>
</body></html>
"""


def write_reports(manifest: Manifest, out_dir: Path) -> None:
    (out_dir / "report.txt").write_text(report_text(manifest) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report_json(manifest), indent=1))
    (out_dir / "report.html").write_text(report_html(manifest))
