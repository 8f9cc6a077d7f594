"""The search's report documents: the console summary, ``report.md``, ``report.html`` and
the Pareto plot (hand-written SVG); plain functions of the summary and the trial rows."""
from __future__ import annotations

import html
from pathlib import Path

from .config import CONSTRAINT_NAMES, NasConfig, fmt_bytes


def summary_text(s: dict, out_dir: Path) -> str:
    t = s["trials"]
    lines = [f"trials: {t['finished']} finished, {t['trained']} trained, {t['feasible']} feasible, "
             f"{t['infeasible_untrained']} over budget before training, {t['invalid_or_failed']} invalid/failed"]
    if s["best"] is not None:
        b = s["best"]
        lines.append(f"best: trial {b['number']} {b['arch']}")
        lines.append(f"  firmware test accuracy {b['int_test_accuracy']:.4f}, RAM {fmt_bytes(b['ram_bytes'])}, "
                     f"flash {fmt_bytes(b['flash_bytes'])}, latency {b['measured_latency_ms']:.2f} ms measured "
                     f"({b['measured_instructions']:,} instructions on {b['emulated_board']})")
        lines.append(f"  verified bit-exact on {b['emulated_board']}; firmware for {s['board']} in "
                     f"{b['export_dir']}")
    elif s["pareto"]:
        lines.append("no model on the Pareto front passed the checks: " +
                     "; ".join(f"#{c['number']}: {', '.join(c['problems'])}" for c in s["checked"]))
    else:
        lines.append(f"NO FEASIBLE MODEL: no trial met the budgets ({_budget_text(s)}). Nearest:")
        for r in s["nearest"]:
            lines.append("  " + _nearest_line(r))
    lines.append(f"report: {out_dir / 'report.md'}, {out_dir / 'report.html'}, {out_dir / 'pareto.svg'}")
    return "\n".join(lines)


def _budget_text(s: dict) -> str:
    b = s["budget"]
    parts = []
    if b["max_ram"] is not None:
        parts.append(f"RAM <= {fmt_bytes(b['max_ram'])}")
    if b["max_flash"] is not None:
        parts.append(f"flash <= {fmt_bytes(b['max_flash'])}")
    if b["max_latency_ms"] is not None:
        parts.append(f"latency <= {b['max_latency_ms']:g} ms")
    return ", ".join(parts)


def _nearest_line(r: dict) -> str:
    over = [f"{n} +{100 * c:.0f}%" for n, c in zip(CONSTRAINT_NAMES, r["constraints"] or []) if c > 0]
    return (f"#{r['number']} {r['arch']}: RAM {fmt_bytes(r['ram_bytes'])}, flash {fmt_bytes(r['flash_bytes'])}, "
            f"latency {r['latency_ms']:.2f} ms" + (f" — over: {', '.join(over)}" if over else ""))


# ---------------------------------------------------------------------------------------
# Report documents
# ---------------------------------------------------------------------------------------
def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def report_markdown(s: dict, rows: list[dict], front: list[dict], config: NasConfig) -> str:
    L = [f"# edgekit nas: {s['dataset']} on {s['board']}", "",
         f"- budgets: {_budget_text(s)}; board {s['board']} ({s['target']}, clock {s['clock_hz'] / 1e6:g} MHz)",
         f"- data: {s['dataset_description']}",
         f"- trials: {s['trials']['finished']} finished, {s['trials']['trained']} trained (QAT, up to "
         f"{s['training']['max_epochs']} epochs, patience {s['training']['patience']}), {s['trials']['feasible']} "
         f"feasible",
         f"- RAM = the firmware's whole RAM as linked (arena + I/O buffers + other static data + the reserved "
         f"stack); flash = code + weights + runtime; latency = cost-model prediction during the search, measured "
         f"(exact instruction count on QEMU, cycle estimate at the board clock) for the checked models"]
    h = s["cost_model"]["holdout"]
    if h:
        L.append(f"- cost model ({s['cost_model']['n_fit']} calibration architectures on "
                 f"{s['cost_model']['board']}): held-out error on instructions mean "
                 f"{100 * h['instructions_mean_abs']:.2f}%, max {100 * h['instructions_max_abs']:.2f}% "
                 f"({h['n']} architectures); cycle estimate mean {100 * h['cycles_mean_abs']:.2f}%, max "
                 f"{100 * h['cycles_max_abs']:.2f}%")
        near = s["cost_model"].get("holdout_near_budget")
        if near:
            L.append(f"- on the {near['n']} of {near['of']} held-out architectures within twice the latency budget "
                     f"(<= {near['within_ms']:g} ms): instructions error mean {100 * near['instructions_mean_abs']:.2f}%, "
                     f"max {100 * near['instructions_max_abs']:.2f}%, {100 * near['share_within_5pct']:.0f}% within "
                     f"5%; cycles mean {100 * near['cycles_mean_abs']:.2f}%, max {100 * near['cycles_max_abs']:.2f}%")
    L += ["", "![Pareto front](pareto.svg)", ""]
    if s["best"]:
        b = s["best"]
        L += ["## Best feasible model", "",
              f"trial {b['number']}: `{b['arch']}` ({b.get('model_origin', '')})", "",
              f"| firmware test accuracy | RAM | flash | arena | latency (measured) | instructions | board build | "
              f"verified on |", "|---|---|---|---|---|---|---|---|",
              f"| {b['int_test_accuracy']:.4f} | {fmt_bytes(b['ram_bytes'])} | {fmt_bytes(b['flash_bytes'])} | "
              f"{fmt_bytes(b['arena_bytes'])} | {b['measured_latency_ms']:.2f} ms | {b['measured_instructions']:,} | "
              f"`{b['export_dir']}` | {b['emulated_board']} (bit-exact) |", ""]
    elif not front:
        L += ["## No feasible model", "", f"No trial met the budgets ({_budget_text(s)}). Nearest:", ""]
        L += [f"- {_nearest_line(r)}" for r in s["nearest"]]
        L.append("")
    if front:
        L += ["## Pareto front (validation accuracy, latency, RAM)", "",
              "| trial | val acc | test acc | latency pred. (ms) | latency meas. (ms) | cost-model error | RAM | flash | "
              "firmware test acc | check | architecture |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        by = {c["number"]: c for c in s["checked"] if not c.get("final")}
        for r in front:
            c = by.get(r["number"], {})
            L.append(f"| {r['number']} | {_fmt(r['val_accuracy'])} | {_fmt(r['test_accuracy'])} | "
                     f"{_fmt(r['latency_ms'], '.2f')} | {_fmt(c.get('measured_latency_ms'), '.2f')} | "
                     f"{_fmt(100 * c['cost_model_error'], '+.2f') + '%' if c.get('cost_model_error') is not None else '-'}"
                     f" | {fmt_bytes(r['ram_bytes'])} | {fmt_bytes(r['flash_bytes'])} | "
                     f"{_fmt(c.get('int_test_accuracy'))} | "
                     f"{('ok' if c.get('ok') else 'rejected: ' + '; '.join(c.get('problems', []))) if c else '-'} | "
                     f"`{r['arch']}` |")
        L.append("")
    L += ["## All trials", "", "| # | status | val acc | test acc | latency (ms) | RAM | flash | MACs | epochs | s | "
          "architecture | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['number']} | {r['status']} | {_fmt(r['val_accuracy'])} | {_fmt(r['test_accuracy'])} | "
                 f"{_fmt(r['latency_ms'], '.2f')} | {fmt_bytes(r['ram_bytes'])} | {fmt_bytes(r['flash_bytes'])} | "
                 f"{r['macs'] if r['macs'] is not None else '-'} | {r['epochs'] or '-'} | {r['seconds'] or '-'} | "
                 f"`{r['arch']}` | {r['reason'] if r['status'] != 'feasible' else ''} |")
    return "\n".join(L) + "\n"


def report_html(s: dict, rows: list[dict], front: list[dict], config: NasConfig) -> str:
    md = report_markdown(s, rows, front, config)
    body = []
    table: list[str] = []

    def flush():
        if table:
            head, _, *rest = table
            cells = lambda line, tag: "".join(f"<{tag}>{html.escape(c.strip().strip('`'))}</{tag}>"  # noqa: E731
                                              for c in line.strip().strip("|").split("|"))
            body.append("<table><tr>" + cells(head, "th") + "</tr>"
                        + "".join("<tr>" + cells(r, "td") + "</tr>" for r in rest) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            body.append(pareto_svg([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")], front, config))
        elif line.startswith("- "):
            body.append(f"<p>{html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.replace('`', ''))}</p>")
    flush()
    return ("<!doctype html><meta charset='utf-8'><title>edgekit nas</title><style>body{font-family:sans-serif}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd;font-size:13px}table{border-collapse:collapse}"
            "</style>\n" + "\n".join(body) + "\n")


def pareto_svg(rows: list[dict], front: list[dict], config: NasConfig) -> str:
    """Two panels, validation accuracy against latency and against RAM (hand-written SVG)."""
    W, H, M = 460, 320, 52
    trained = [r for r in rows if r["trained"] and r["val_accuracy"] is not None]
    untrained = [r for r in rows if not r["trained"] and r["latency_ms"] is not None]
    front_ids = {r["number"] for r in front}
    panels = [("latency_ms", "latency (ms, cost model)", config.budget.max_latency_ms, 1.0),
              ("ram_bytes", "RAM (KiB)", config.budget.max_ram, 1 / 1024)]
    accs = [r["val_accuracy"] for r in trained] or [0.0, 1.0]
    y_lo = max(0.0, min(accs) - 0.05) if trained else 0.0
    y_hi = min(1.0, max(accs) + 0.02) if trained else 1.0
    if y_hi - y_lo < 0.05:
        y_lo = max(0.0, y_hi - 0.05)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 30}" font-family="sans-serif" '
           f'font-size="11">']
    for p, (key, label, budget, scale) in enumerate(panels):
        ox = p * W
        xs = [r[key] * scale for r in trained] + ([budget * scale] if budget else [])
        x_hi = max(xs + [1e-9]) * 1.1
        x0, x1, y0, y1 = ox + M, ox + W - 12, H - M + 10, 14

        def X(v):
            return x0 + (x1 - x0) * min(v, x_hi) / x_hi

        def Y(v):
            return y0 - (y0 - y1) * (v - y_lo) / (y_hi - y_lo or 1)

        out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#888"/>')
        for i in range(6):
            xv = x_hi * i / 5
            yv = y_lo + (y_hi - y_lo) * i / 5
            out.append(f'<text x="{X(xv):.1f}" y="{y0 + 14}" text-anchor="middle">{xv:.3g}</text>')
            out.append(f'<text x="{x0 - 4}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.3f}</text>')
        out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 30}" text-anchor="middle">{html.escape(label)}</text>')
        out.append(f'<text x="{ox + 12}" y="{(y0 + y1) / 2}" transform="rotate(-90 {ox + 12} {(y0 + y1) / 2})" '
                   f'text-anchor="middle">validation accuracy</text>')
        if budget:
            bx = X(budget * scale)
            out.append(f'<line x1="{bx:.1f}" y1="{y1}" x2="{bx:.1f}" y2="{y0}" stroke="#c33" stroke-dasharray="4 3"/>'
                       f'<text x="{bx + 3:.1f}" y="{y1 + 12}" fill="#c33">budget</text>')
        for r in untrained:  # over budget before training: ticks on the x axis
            out.append(f'<line x1="{X(r[key] * scale):.1f}" y1="{y0 - 6}" x2="{X(r[key] * scale):.1f}" y2="{y0}" '
                       f'stroke="#aaa"><title>#{r["number"]} not trained: {html.escape(r["reason"])}</title></line>')
        for r in sorted(trained, key=lambda r: r["number"] in front_ids):
            on = r["number"] in front_ids
            color = "#d62728" if on else ("#1f77b4" if r["feasible"] else "#999")
            out.append(f'<circle cx="{X(r[key] * scale):.1f}" cy="{Y(r["val_accuracy"]):.1f}" r="{5 if on else 3.5}" '
                       f'fill="{color}" fill-opacity="0.85"><title>#{r["number"]} {html.escape(r["arch"])}: '
                       f'acc {r["val_accuracy"]:.4f}, {r["latency_ms"]:.2f} ms, {fmt_bytes(r["ram_bytes"])}'
                       f'</title></circle>')
    out.append(f'<text x="{M}" y="{H + 24}"><tspan fill="#d62728">&#9679; Pareto front</tspan>  '
               f'<tspan fill="#1f77b4">&#9679; feasible</tspan>  <tspan fill="#999">&#9679; trained, over budget'
               f'</tspan>  <tspan fill="#aaa">| over budget, not trained (x axis)</tspan></text>')
    out.append("</svg>")
    return "\n".join(out)
