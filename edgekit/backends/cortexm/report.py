"""Per-layer report of a Cortex-M build: text, JSON and a self-contained HTML page
(``templates/report/cortexm.html.j2``, plots from matplotlib).

Everything comes from the build manifest (layers, memory plan, linked sizes), so ``edgekit
report`` works on any Cortex-M build directory; the page adds what later commands left in
the directory: profile.json (instructions per layer), verify.json, validate.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ... import pages
from ...manifest import Manifest
from .kernels.base import format_fallbacks
from .memory import describe_peak_ram



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
    tensors = manifest.memory_plan["tensors"]
    # a row fusion's output pinned over its producer's input (ir/planner.py) shares those bytes
    pins = [(tensors[t], tensors[u]) for t, u in manifest.memory_plan.get("pinned", {}).items()
            if t in tensors and u in tensors]
    return [sum(b["size"] for b in bufs if b["first"] <= i <= b["last"])
            - sum(min(p["size"], q["size"]) for p, q in pins if p["first"] <= i <= p["last"] and q["first"] <= i <= q["last"])
            for i in range(len(manifest.layers))]


def report_json(manifest: Manifest) -> dict:
    timeline = memory_timeline(manifest)
    flash, _ = _layer_flash(manifest)
    variants = manifest.kernel_variants or {}
    layers = [dict(layer, arena_live_bytes=live, flash_bytes=f,
                   **({"kernel_variant": variants[layer["name"]]} if layer["name"] in variants else {}))
              for layer, live, f in zip(manifest.layers, timeline, flash)]
    mem = manifest.memory
    return {
        "target": manifest.target, "board": manifest.board, "kernels": manifest.kernels,
        # --optimize of an optimized-kernel build (builds before the key: absent); each layer's own
        # decision is its optimize_choice, its cost in flash its flash_bytes
        **({"optimize": manifest.optimize} if manifest.optimize else {}),
        "macs": manifest.macs,
        "weight_bytes": manifest.weight_bytes, "arena_bytes": manifest.arena_bytes,
        "arena_lower_bound": manifest.memory_plan.get("lower_bound"),
        "planner": manifest.memory_plan.get("strategy"),
        "in_place_layers": manifest.memory_plan.get("inplace", []),
        "row_fused": [f"{f['producer']} -> {f['consumer']} (ring of {f['ring_rows']} rows, {f['ring_bytes']} B)"
                      for f in manifest.memory_plan.get("fused", [])],
        "flash_bytes": mem["flash_bytes"], "ram_bytes": mem["ram_bytes"],
        # where the model's input and output live, and what one inference needs (the build's static stack;
        # `edgekit verify` measures it); builds made before these keys have none
        **{k: mem[k] for k in ("io_buffers", "io_buffer_bytes", "peak_ram_bytes", "peak_ram_stack") if k in mem},
        "layers": layers,
        "kernel_fallbacks": manifest.kernel_fallbacks or [],
    }


def _shape(s) -> str:
    return "x".join(map(str, s)) or "1"


def _kernel_cell(layer: dict) -> str:
    """The text table's kernel column: the variant, and what --optimize decided for the layer's weights
    when more than the objective alone did (the full description is report.json's ``kernel``)."""
    variant = layer.get("kernel_variant", "")
    choice = layer.get("optimize_choice")
    return f"{variant} ({choice})" if choice else variant


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
            f"{'weights B':>11}{'flash B':>9}{'out B':>8}  {'buffer':<8}{'offset':>8}{'arena live':>12}  kernel")
    kernels = f"{rep['kernels'] or 'optimized'} kernels" + (f", --optimize {rep['optimize']}" if rep.get("optimize") else "")
    lines = [f"edgekit build for {rep['target']} on {rep['board']} ({kernels}): {rep['macs']} MACs, "
             f"weights {rep['weight_bytes']} B, "
             f"arena {rep['arena_bytes']} B (lower bound {rep['arena_lower_bound']} B, {rep['planner']}), "
             f"flash {rep['flash_bytes']} B, RAM {rep['ram_bytes']} B"
             + (f"; {describe_peak_ram(dict(manifest.memory, arena_bytes=rep['arena_bytes']))}"
                if "peak_ram_bytes" in rep else ""), head, "-" * len(head)]
    for i, layer in enumerate(layers):
        off = "" if layer["arena_offset"] is None else str(layer["arena_offset"])
        lines.append(f"{i:>3}  {layer['name']:<{w_name}}{_kind(layer):<{w_op}}{_shape(layer['input_shape']):<{w_in}}"
                     f"{_shape(layer['output_shape']):<{w_out}}{layer['macs']:>10}{layer['weight_bytes']:>11}"
                     f"{layer['flash_bytes'] if manifest.memory_breakdown else '':>9}{layer['output_bytes']:>8}  {layer['buffer'] or 'alias':<8}{off:>8}"
                     f"{layer['arena_live_bytes']:>12}  {_kernel_cell(layer)}".rstrip())
    if rep["in_place_layers"]:
        lines.append(f"in place: {', '.join(rep['in_place_layers'])}")
    if rep["row_fused"]:  # the producer's output exists only as a ring of rows (ir/planner.py)
        lines.append(f"row-fused: {'; '.join(rep['row_fused'])}")
    if manifest.kernel_fallbacks:  # no silent degradation: which layer runs a slower kernel, and why
        lines.append(format_fallbacks(manifest.kernel_fallbacks, limit=len(manifest.kernel_fallbacks)))
    return "\n".join(lines)


def _layer_flash(manifest: Manifest) -> tuple[list[int], int]:
    """Constant bytes each layer keeps in flash (weights, biases, tables), from the linked
    firmware's symbols (``ek_layer<N>_*`` or ``ek_<layer name>_*``); the rest is unattributed."""
    names = [re.sub(r"\W", "_", layer["name"]) for layer in manifest.layers]
    by_length = sorted(range(len(names)), key=lambda i: -len(names[i]))  # conv_10 before conv_1
    per_layer, other = [0] * len(names), 0
    for sym in (manifest.memory_breakdown or {}).get("weight_symbols", []):
        m = re.match(r"ek_layer(\d+)_", sym["symbol"])
        index = int(m.group(1)) if m and int(m.group(1)) < len(names) else next(
            (i for i in by_length if sym["symbol"].startswith(f"ek_{names[i]}_")), None)
        if index is None:
            other += sym["bytes"]
        else:
            per_layer[index] += sym["bytes"]
    return per_layer, other


def _buffer_table(manifest: Manifest) -> list[dict]:
    """Each arena buffer once: its tensors (in-place and reshaped views share one), place and lifetime."""
    tensors: dict[str, list[str]] = {}
    for name, p in manifest.memory_plan["tensors"].items():
        if p["buffer"] == "arena":
            tensors.setdefault(p["tensor"], []).append(name)
    layers = manifest.layers
    return [dict(b, tensors=tensors[b["tensor"]], first_layer=layers[b["first"]]["name"] if 0 <= b["first"] < len(
        layers) else "input", last_layer=layers[min(b["last"], len(layers) - 1)]["name"] if layers else "")
            for b in sorted(_buffers(manifest), key=lambda b: (b["first"], b["offset"]))]


def _layer_ticks(ax, names: list[str]) -> None:
    """Layer index and name under each position; every k-th one when there are many."""
    step = max(1, len(names) // 40)
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [f"{i} {names[i][:24]}" for i in ticks], rotation=60, ha="right", fontsize=7)


def arena_plot(manifest: Manifest, buffers: list[dict]) -> str:
    """Two panels over the layers: arena bytes live (peak marked, planned size and lower bound
    as lines), and where each buffer sits (offset x lifetime, one colour per buffer, named)."""
    timeline = memory_timeline(manifest)
    names = [layer["name"] for layer in manifest.layers]
    arena = max(manifest.arena_bytes, 1)
    n = len(names)
    with pages.figure("arena", 9.0, 6.8) as fig:
        live_ax, place_ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
        peak = max(range(n), key=lambda i: timeline[i]) if n else 0
        colours = [pages.PALETTE[3] if i == peak else pages.PALETTE[0] for i in range(n)]
        live_ax.bar(range(n), timeline, color=colours, width=0.75)
        live_ax.axhline(manifest.arena_bytes, color="#444", linestyle="--", linewidth=1,
                        label=f"arena as planned: {manifest.arena_bytes:,} B")
        bound = manifest.memory_plan.get("lower_bound")
        if bound is not None and bound != manifest.arena_bytes:
            live_ax.axhline(bound, color="#999", linestyle=":", linewidth=1, label=f"lower bound: {bound:,} B")
        if n:
            live_ax.annotate(f"peak {timeline[peak]:,} B\nlayer {peak} {names[peak]}", (peak, timeline[peak]),
                             xytext=(0, 6), textcoords="offset points", ha="center", va="bottom", fontsize=8,
                             color=pages.PALETTE[3])
        for i, live in enumerate(timeline):
            if live < 0.08 * arena:  # too short a bar to read: its number instead
                live_ax.text(i, live, f"{live:,}", ha="center", va="bottom", fontsize=7, rotation=90)
        live_ax.set_ylim(0, arena * 1.35)
        live_ax.set_ylabel("bytes live in the arena")
        live_ax.set_title("Arena use over one inference (bars: bytes of the buffers live during each layer)",
                          loc="left")
        live_ax.legend(loc="upper right", fontsize=8, frameon=False)
        # a buffer is drawn at least this tall so a 64 B buffer next to an 8 KB one stays visible;
        # the table under the plot has the exact sizes
        min_height = arena * 0.025
        handles = []
        for k, b in enumerate(buffers):
            colour = pages.PALETTE[k % len(pages.PALETTE)]
            x0 = max(b["first"], 0) - 0.4
            width = min(b["last"], n - 1) + 0.4 - x0
            height = max(b["size"], min_height)
            handles.append(place_ax.broken_barh([(x0, width)], (b["offset"], height), facecolors=colour, alpha=0.75,
                                                edgecolor="#333", linewidth=0.6,
                                                label=f"{b['tensor']} ({b['size']:,} B)"))
            place_ax.text(x0 + 0.1, b["offset"] + height / 2, f"{b['tensor']} {b['size']:,} B", va="center",
                          fontsize=7, clip_on=True)
        place_ax.set_ylim(0, arena * 1.05)
        place_ax.set_xlim(-0.6, max(n, 1) - 0.4)
        place_ax.set_ylabel("arena offset (bytes)")
        stretched = sum(b["size"] < min_height for b in buffers)
        place_ax.set_title(f"Buffer placement ({len(buffers)} buffers"
                           + (f"; {stretched} under {min_height:,.0f} B drawn {min_height:,.0f} B tall" if stretched
                              else "") + ")", loc="left")
        if handles:
            place_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
                            title="buffer (size)", title_fontsize=8)
        place_ax.grid(axis="y", color="#eee", linewidth=0.6)
        _layer_ticks(place_ax, names)
        return pages.svg(fig)


def _capacity_rows(manifest: Manifest) -> list[dict]:
    rows = []
    for region in (manifest.fit or {}).get("regions", []):
        parts = [(k, v) for k, v in region.get("contents", {}).items() if v and k != "padding"]
        rows.append({"label": f"{region['region']} ({region['size'] // 1024:,} KiB)", "capacity": region["size"],
                     "parts": parts})
    return rows


def report_page(manifest: Manifest, build_dir: Path) -> str:
    """report.html: memory over the inference, flash per layer, instructions per layer (when
    profiled), RAM/flash against the board, the verify and validate records when present."""
    rep = report_json(manifest)
    names = [layer["name"] for layer in manifest.layers]
    labels = [f"{i} {name}" for i, name in enumerate(names)]
    buffers = _buffer_table(manifest)
    flash_per_layer, flash_other = _layer_flash(manifest)
    profile = pages.read_record(build_dir, "profile.json")
    instructions = None
    if profile and "layers" in profile:
        rows = profile["layers"]
        instructions = {
            "plot": pages.bar_chart("instructions", [r["label"] for r in rows], [r["instructions"] for r in rows],
                                    f"instructions per inference (exact, QEMU {profile.get('counted_on', '')})",
                                    [f"{r['instructions']:,} ({100 * r['share']:.1f}%)" for r in rows],
                                    color=pages.PALETTE[2]),
            "total": profile["total"], "board": profile.get("board"), "clock_hz": profile.get("clock_hz")}
    plots = {
        "arena": arena_plot(manifest, buffers),
        "flash": pages.bar_chart("flash", labels + (["(unattributed constants)"] if flash_other else []),
                                 flash_per_layer + ([flash_other] if flash_other else []),
                                 "bytes of constants in flash (weights, biases, tables; linked firmware)",
                                 color=pages.PALETTE[1]),
        "capacity": pages.capacity_chart("capacity", _capacity_rows(manifest)),
    }
    # what one inference needs in RAM, and where the input and output live (--io-buffers): as the text report says
    peak = describe_peak_ram(dict(manifest.memory, arena_bytes=rep["arena_bytes"])) if "peak_ram_bytes" in rep else None
    return pages.render("cortexm.html.j2", rep=rep, build_dir=build_dir, layers=rep["layers"], buffers=buffers, peak=peak,
                        plots=plots, instructions=instructions, fit=manifest.fit or {},
                        breakdown=manifest.memory_breakdown or {},
                        verify=pages.verify_section(build_dir), validation=pages.validation_section(build_dir))


def write_reports(manifest: Manifest, out_dir: Path) -> None:
    """The build's report.txt and report.json. report.html is `edgekit report`'s: its plots take
    a second or two to draw, which a search building hundreds of candidates should not pay."""
    (out_dir / "report.txt").write_text(report_text(manifest) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report_json(manifest), indent=1))
