"""The search's report documents: the console summary, ``report.md``, ``report.html``
(``templates/report/nas.html.j2``) and the Pareto plot (matplotlib); plain functions of the
summary and the trial rows. The tables' cells are made once, for the Markdown and the page."""
from __future__ import annotations

from pathlib import Path

from .. import pages
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


def _facts(s: dict) -> list[str]:
    """The search's settings and the cost model's accuracy, one sentence each (report.md's bullets)."""
    facts = [f"budgets: {_budget_text(s)}; board {s['board']} ({s['target']}, clock {s['clock_hz'] / 1e6:g} MHz)",
             f"data: {s['dataset_description']}",
             f"trials: {s['trials']['finished']} finished, {s['trials']['trained']} trained (QAT, up to "
             f"{s['training']['max_epochs']} epochs, patience {s['training']['patience']}), {s['trials']['feasible']} "
             f"feasible",
             f"RAM = the firmware's whole RAM as linked (arena + I/O buffers + other static data + the reserved "
             f"stack); flash = code + weights + runtime; latency = cost-model prediction during the search, measured "
             f"(exact instruction count on QEMU, cycle estimate at the board clock) for the checked models"]
    h = s["cost_model"]["holdout"]
    if h:
        facts.append(f"cost model ({s['cost_model']['n_fit']} calibration architectures on "
                     f"{s['cost_model']['board']}): held-out error on instructions mean "
                     f"{100 * h['instructions_mean_abs']:.2f}%, max {100 * h['instructions_max_abs']:.2f}% "
                     f"({h['n']} architectures); cycle estimate mean {100 * h['cycles_mean_abs']:.2f}%, max "
                     f"{100 * h['cycles_max_abs']:.2f}%")
        near = s["cost_model"].get("holdout_near_budget")
        if near:
            facts.append(f"on the {near['n']} of {near['of']} held-out architectures within twice the latency budget "
                         f"(<= {near['within_ms']:g} ms): instructions error mean "
                         f"{100 * near['instructions_mean_abs']:.2f}%, max {100 * near['instructions_max_abs']:.2f}%, "
                         f"{100 * near['share_within_5pct']:.0f}% within 5%; cycles mean "
                         f"{100 * near['cycles_mean_abs']:.2f}%, max {100 * near['cycles_max_abs']:.2f}%")
    return facts


BEST_HEAD = ["firmware test accuracy", "RAM", "flash", "arena", "latency (measured)", "instructions", "board build",
             "verified on"]
FRONT_HEAD = ["trial", "val acc", "test acc", "latency pred. (ms)", "latency meas. (ms)", "cost-model error", "RAM",
              "flash", "firmware test acc", "check", "architecture"]
TRIALS_HEAD = ["#", "status", "val acc", "test acc", "latency (ms)", "RAM", "flash", "MACs", "epochs", "s",
               "architecture", "note"]


def _best_cells(b: dict) -> list[str]:
    return [f"{b['int_test_accuracy']:.4f}", fmt_bytes(b["ram_bytes"]), fmt_bytes(b["flash_bytes"]),
            fmt_bytes(b["arena_bytes"]), f"{b['measured_latency_ms']:.2f} ms", f"{b['measured_instructions']:,}",
            b["export_dir"], f"{b['emulated_board']} (bit-exact)"]


def _front_cells(s: dict, front: list[dict]) -> list[list[str]]:
    by = {c["number"]: c for c in s["checked"] if not c.get("final")}
    out = []
    for r in front:
        c = by.get(r["number"], {})
        error = c.get("cost_model_error")
        check = ("ok" if c.get("ok") else "rejected: " + "; ".join(c.get("problems", []))) if c else "-"
        out.append([str(r["number"]), _fmt(r["val_accuracy"]), _fmt(r["test_accuracy"]), _fmt(r["latency_ms"], ".2f"),
                    _fmt(c.get("measured_latency_ms"), ".2f"), "-" if error is None else f"{100 * error:+.2f}%",
                    fmt_bytes(r["ram_bytes"]), fmt_bytes(r["flash_bytes"]), _fmt(c.get("int_test_accuracy")), check,
                    r["arch"]])
    return out


def _trial_cells(rows: list[dict]) -> list[list[str]]:
    return [[str(r["number"]), r["status"], _fmt(r["val_accuracy"]), _fmt(r["test_accuracy"]),
             _fmt(r["latency_ms"], ".2f"), fmt_bytes(r["ram_bytes"]), fmt_bytes(r["flash_bytes"]),
             str(r["macs"]) if r["macs"] is not None else "-", str(r["epochs"] or "-"), str(r["seconds"] or "-"),
             r["arch"], r["reason"] if r["status"] != "feasible" else ""] for r in rows]


def _markdown_table(head: list[str], cells: list[list[str]], code_column: int | None = None) -> list[str]:
    def row(values, code=None):
        return "| " + " | ".join(f"`{v}`" if i == code else v for i, v in enumerate(values)) + " |"
    return [row(head), "|" + "---|" * len(head)] + [row(c, code_column) for c in cells]


def report_markdown(s: dict, rows: list[dict], front: list[dict], config: NasConfig) -> str:
    L = [f"# edgekit nas: {s['dataset']} on {s['board']}", ""] + [f"- {f}" for f in _facts(s)]
    L += ["", "![Pareto front](pareto.svg)", ""]
    if s["best"]:
        b = s["best"]
        L += ["## Best feasible model", "", f"trial {b['number']}: `{b['arch']}` ({b.get('model_origin', '')})", ""]
        L += _markdown_table(BEST_HEAD, [_best_cells(b)], code_column=6) + [""]
    elif not front:
        L += ["## No feasible model", "", f"No trial met the budgets ({_budget_text(s)}). Nearest:", ""]
        L += [f"- {_nearest_line(r)}" for r in s["nearest"]]
        L.append("")
    if front:
        L += ["## Pareto front (validation accuracy, latency, RAM)", ""]
        L += _markdown_table(FRONT_HEAD, _front_cells(s, front), code_column=10) + [""]
    L += ["## All trials", ""] + _markdown_table(TRIALS_HEAD, _trial_cells(rows), code_column=10)
    return "\n".join(L) + "\n"


def report_html(s: dict, rows: list[dict], front: list[dict], config: NasConfig) -> str:
    """report.html: the same content as report.md (templates/report/nas.html.j2), the Pareto plot inline."""
    plotted = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    return pages.render(
        "nas.html.j2", s=s, facts=_facts(s), budget=_budget_text(s),
        plot=pareto_svg(plotted, front, config, chance=s.get("chance")),
        untrained=sum(not (r["trained"] and r["val_accuracy"] is not None) and r["latency_ms"] is not None
                      for r in plotted),
        best=_best_cells(s["best"]) if s["best"] else None, best_head=BEST_HEAD,
        nearest=[_nearest_line(r) for r in s["nearest"]] if not s["best"] and not front else [],
        front=_front_cells(s, front) if front else [], front_head=FRONT_HEAD,
        trials=_trial_cells(rows), trials_head=TRIALS_HEAD)


#: a quantity spread wider than this (largest / smallest) gets a log axis
LOG_SPREAD = 20.0


def _axis_scale(ax, values: list[float]) -> None:
    """Log where the values span more than LOG_SPREAD (a 1,000 ms trial next to 0.2 ms ones),
    with plain-number tick labels (0.5, 1, 2, 5, ...) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > LOG_SPREAD:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlim(min(positive) / 1.5, max(positive) * 1.5)
    else:
        ax.set_xlim(0, max(positive, default=1) * 1.12)


def pareto_svg(rows: list[dict], front: list[dict], config: NasConfig, chance: dict | None = None) -> str:
    """Validation accuracy against latency and against RAM (matplotlib). Every trial is drawn:
    trained ones at their accuracy (the Pareto front marked and numbered), the ones never trained
    (over budget before training) as crosses in a band under the accuracy axis. Budgets are
    dashed lines; ``chance`` (the summary's majority-class baseline) a dotted one."""
    trained = [r for r in rows if r["trained"] and r["val_accuracy"] is not None]
    untrained = [r for r in rows if not (r["trained"] and r["val_accuracy"] is not None)
                 and r["latency_ms"] is not None and r["ram_bytes"] is not None]
    front_ids = {r["number"] for r in front}
    panels = [("latency_ms", "latency per inference (ms; cost model)", config.budget.max_latency_ms, 1.0, "ms"),
              ("ram_bytes", "RAM (KiB)", config.budget.max_ram, 1 / 1024, "KiB")]
    accs = [r["val_accuracy"] for r in trained] + ([chance["val"]] if chance else [])
    y_lo = max(0.0, min(accs, default=0.0) - 0.05)
    y_hi = min(1.0, max(accs, default=1.0) + 0.03)
    if y_hi - y_lo < 0.1:
        y_lo = max(0.0, y_hi - 0.1)
    band = y_lo - 0.08 * (y_hi - y_lo)  # where the untrained trials sit, under the accuracy range
    with pages.figure("pareto", 10.0, 4.4) as fig:
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (key, label, budget, scale, unit) in zip(axes, panels):
            values = [r[key] * scale for r in trained + untrained] + ([budget * scale] if budget else [])
            _axis_scale(ax, values)
            groups = [("trained, over budget", [r for r in trained if not r["feasible"]], "#999999", "o", 22),
                      ("feasible", [r for r in trained if r["feasible"] and r["number"] not in front_ids],
                       pages.PALETTE[0], "o", 26),
                      ("Pareto front", [r for r in trained if r["number"] in front_ids], pages.PALETTE[3], "D", 40)]
            for name, members, colour, marker, size in groups:
                if members:
                    ax.scatter([r[key] * scale for r in members], [r["val_accuracy"] for r in members], s=size,
                               c=colour, marker=marker, label=f"{name} ({len(members)})", zorder=3,
                               edgecolors="white", linewidths=0.5)
            for r in trained:
                if r["number"] in front_ids:
                    ax.annotate(f"#{r['number']}", (r[key] * scale, r["val_accuracy"]), xytext=(4, 3),
                                textcoords="offset points", fontsize=7, color=pages.PALETTE[3])
            if untrained:
                ax.scatter([r[key] * scale for r in untrained], [band] * len(untrained), marker="x", s=18, c="#aaaaaa",
                           label=f"not trained: over budget ({len(untrained)})", zorder=2)
            if budget:
                ax.axvline(budget * scale, color="#c00", linestyle="--", linewidth=1,
                           label=f"budget {budget * scale:g} {unit}")
            if chance:
                ax.axhline(chance["val"], color="#555", linestyle=":", linewidth=1,
                           label=f"chance (majority class) {chance['val']:.3f}")
            ax.set_xlabel(label)
            ax.grid(color="#e6e6e6", linewidth=0.6, which="major")
            ax.set_axisbelow(True)
        axes[0].set_ylabel("validation accuracy")
        axes[0].set_ylim(band - 0.05 * (y_hi - y_lo), y_hi)
        if untrained:
            axes[0].axhspan(band - 0.05 * (y_hi - y_lo), y_lo - 0.02 * (y_hi - y_lo), color="#f3f3f3", zorder=0)
            axes[1].axhspan(band - 0.05 * (y_hi - y_lo), y_lo - 0.02 * (y_hi - y_lo), color="#f3f3f3", zorder=0)
        legend = {}
        for ax in axes:  # each panel has its own budget line; the markers are the same in both
            for handle, text in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(text, handle)
        labels, handles = list(legend), list(legend.values())
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8,
                       frameon=False)
        return pages.svg(fig)
