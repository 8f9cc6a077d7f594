"""The files ``edgekit mixed-precision`` writes: assignment, JSON and text report, SVG plot."""
from __future__ import annotations

import json
from pathlib import Path


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    return str(o)


def summary_text(s: dict) -> str:
    lines = [f"mixed precision: {s['model']} on {s['dataset']} for {s['board']} ({s['target']}, "
             f"{s['kernels']} kernels)",
             "budgets: " + (", ".join(f"{k} {v:,.6g}" for k, v in s["budgets"].items() if v is not None) or "none"),
             "", f"{'layer':<14}{'node':<12}{'params':>8}{'Tr(H)':>12}{'+-':>10}   sensitivity at "
             + "/".join(map(str, s["cost_table"]["bit_choices"])) + " bits"]
    widths = [str(b) for b in s["cost_table"]["bit_choices"]]
    for la in s["layers"]:
        sens = " ".join(f"{la['sensitivity'][b]:.3g}" if b in la["sensitivity"] else "-" for b in widths)
        lines.append(f"{la['module']:<14}{la['node']:<12}{la['params']:>8}{la['trace']:>12.4g}"
                     f"{la['trace_stderr']:>10.2g}   {sens}")
    if s.get("binary"):
        lines += ["", "1-bit (binary) weights, offered only where a binary kernel runs the layer:"]
        lines += [f"  {k} ({v['node']}): " + (f"offered ({v['kernel']})" if v["offered"] else
                                               f"not offered: {v['reason']}") for k, v in s["binary"].items()]
    elif 1 in s.get("bit_choices", []):
        lines += ["", "1-bit (binary) weights: not offered, no layer runs on a binary kernel"]
    if s.get("activations"):
        lines += ["", f"{'activation':<14}{'elements':>10}{'Tr(H)':>12}{'+-':>10}   sensitivity at "
                  + "/".join(s["activations"][0]["sensitivity"]) + " bits"]
        for la in s["activations"]:
            sens = " ".join(f"{v:.3g}" for v in la["sensitivity"].values())
            lines.append(f"{la['module']:<14}{la['elements']:>10}{la['trace']:>12.4g}{la['trace_stderr']:>10.2g}   {sens}")
    lines += ["", f"Pareto set over flash (ILP, predicted from the measured cost table): {len(s['pareto'])} "
              "assignments"]
    for a in s["pareto"]:
        lines.append(f"  flash {a['predicted']['flash']:>9,.0f} B  instructions "
                     f"{a['predicted']['instructions']:>11,.0f}  sensitivity {a['sensitivity']:.4g}  " + " ".join(f"{v}" for v in a["bits"].values())
                     + "".join(f" a{v}" for v in a.get("act_bits", {}).values()))
    r = s.get("result")
    lines.append("")
    if r:
        m, a = r["measured"], r["allocation"]
        lines += [f"chosen: {', '.join(f'{k}={v}' for k, v in a['bits'].items())}"
                  + "".join(f", {k}=a{v}" for k, v in a.get("act_bits", {}).items()),
                  f"measured: flash {m['flash_bytes']:,} B (predicted {a['predicted']['flash']:,.0f}), RAM "
                  f"{m['ram_bytes']:,} B, {m['instructions']:,} instructions (predicted "
                  f"{a['predicted']['instructions']:,.0f}), {m['latency_ms']:.3f} ms at {m['clock_hz'] / 1e6:g} MHz; "
                  f"bit-exact on {m['verified_on']}: {'yes' if m['bit_exact'] else 'NO'}"]
        if r.get("predicted_for_tuned_scales"):
            t = r["predicted_for_tuned_scales"]
            lines.append(f"predicted for the fine-tuned weights' per-channel scales: flash {t['flash']:,.0f} B, "
                         f"{t['instructions']:,.0f} instructions (above: for the checkpoint's)")
        lines.append(f"test accuracy: {m['int_test_accuracy']:.4f} (integer model = firmware); uniform 8-bit "
                     f"checkpoint {s['uniform8_test_accuracy']:.4f}")
    else:
        lines.append("no assignment met the budgets when measured: " + json.dumps(s["attempts"][-1]["over_budget"]))
    lines.append("time: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.0f} s" for k, v in s["seconds"].items()))
    return "\n".join(lines) + "\n"


def accuracy_flash_svg(points: list[dict], path: Path, title: str) -> Path:
    """Accuracy against flash: ``points`` are dicts with flash, accuracy, label, and
    optionally accuracy_std (error bar) and series (one marker style per series)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p.get("series", p["label"]), []).append(p)
    for name, pts in series.items():
        pts = sorted(pts, key=lambda p: p["flash"])
        ax.errorbar([p["flash"] for p in pts], [p["accuracy"] for p in pts],
                    yerr=[p.get("accuracy_std", 0.0) for p in pts], marker="o", capsize=3,
                    linestyle="-" if len(pts) > 1 else "none", label=name)
    ax.set_xlabel("flash (bytes, measured)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


def write_report(s: dict, out: Path) -> None:
    r = s.get("result")
    if r:
        a = r["allocation"]
        (out / "assignment.json").write_text(json.dumps(
            {"bits": a["bits"], "act_bits": a.get("act_bits", {}),
             "nodes": dict(zip(a["bits"], [la["node"] for la in s["layers"]])),
             "binary": s.get("binary", {}), "predicted": a["predicted"], "measured": {k: r["measured"][k] for k in (
                 "flash_bytes", "ram_bytes", "instructions", "latency_ms")}}, indent=1, default=_json_default))
    (out / "pareto.json").write_text(json.dumps(s["pareto"], indent=1, default=_json_default))
    (out / "report.json").write_text(json.dumps(s, indent=1, default=_json_default))
    (out / "report.txt").write_text(summary_text(s))
    pts = []
    u = s["cost_table"]["notes"]["uniform"]
    top = str(max(int(k) for k in u))
    pts.append({"flash": u[top]["flash"] if top in u else u[int(top)]["flash"],
                "accuracy": s["uniform8_test_accuracy"], "label": "uniform 8-bit checkpoint"})
    for at in s["attempts"]:
        m = at["measured"]
        pts.append({"flash": m["flash_bytes"], "accuracy": m["int_test_accuracy"],
                    "label": "HAWQ assignment" + ("" if not at["over_budget"] else " (over budget)")})
    accuracy_flash_svg(pts, out / "accuracy_flash.svg", f"{s['model']} on {s['dataset']}, {s['board']}")
