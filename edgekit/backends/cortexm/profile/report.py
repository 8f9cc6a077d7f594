"""The profile of one build: per-layer instructions, the cycle estimate, and the files
(``profile.json``, ``profile.html``, the manifest's ``profile`` summary)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .... import pages
from ....manifest import load_manifest
from .classifier import classify, instruction_cost
from .runner import GLUE

PROFILE_JSON = "profile.json"
PROFILE_HTML = "profile.html"
DEFINITION = ("one inference = one call of ek_model_run, from its first instruction up to and including the "
              "instruction that returns to the caller; each instruction counts for the layer function "
              "(ek_layer<N>_*) that ran last, ek_model_run's own instructions are the glue row")


@dataclass
class ProfileReport:
    data: dict
    written: list[Path] = field(default_factory=list)  # profile.json, profile.html once saved

    def to_json(self) -> dict:
        return self.data

    def table(self) -> str:
        d = self.data
        lines = [f"edgekit profile {d['build_dir']}: {d['target']} on {d['board']}; instructions counted on QEMU "
                 f"{d['counted_on']}, cycles estimated for {d['target']} at {d['clock_hz'] / 1e6:g} MHz "
                 f"({d['clock_source']})",
                 f"{'layer':<28}{'op':<16}{'MACs':>10}{'instructions':>14}{'instr/MAC':>11}{'share':>8}"
                 f"{'est. cycles':>13}{'est. ms':>10}"]
        for r in d["layers"]:
            ipm = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "-"
            lines.append(f"{r['label'][:27]:<28}{r['op'][:15]:<16}{r['macs']:>10,}{r['instructions']:>14,}{ipm:>11}"
                         f"{100 * r['share']:>7.1f}%{r['est_cycles']:>13,.0f}{r['est_ms']:>10.3f}")
        t = d["total"]
        ipm = f"{t['instructions_per_mac']:.2f}" if t["instructions_per_mac"] is not None else "-"
        lines.append(f"{'total (one inference)':<28}{'':<16}{t['macs']:>10,}{t['instructions']:>14,}{ipm:>11}"
                     f"{100.0:>7.1f}%{t['est_cycles']:>13,.0f}{t['est_ms']:>10.3f}")
        v = d["vectors"]
        lines.append(f"one inference = input vector {d['vector']} of {v['count']} ({v['source']}); over all "
                     f"{v['count']}: {v['min']:,}..{v['max']:,} instructions (mean {v['mean']:,.1f})")
        f, r = d["memory"]["flash"], d["memory"]["ram"]
        used = d["memory"].get("stack_used")
        inf = d["memory"].get("inference_stack")
        lines.append(f"flash {f['total']:,} B: code {f['code']:,}, weights {f['weights']:,}, runtime {f['runtime']:,}"
                     f" | RAM {r['total']:,} B: arena {r['arena']:,}, static {r['static']:,}, stack {r['stack']:,} "
                     f"reserved ({used if used is not None else '?'} used"
                     + (f", {inf} by the inference" if inf is not None else "") + ")")
        lines.append("cycles and ms are ESTIMATES from instruction classes (core timing table); instruction counts "
                     "are exact")
        return "\n".join(lines)


def profile_data(build_dir, manifest, core, run_board, est_board, layers, zones, layer_zone, counts, insns, vector,
            source, mem) -> dict:
    nz = len(zones)
    window = counts.windows[vector]
    per_zone_classes = [dict() for _ in range(nz + 1)]
    per_zone_cycles = [0.0] * (nz + 1)
    unknown = set()
    for (z, pc), (n, taken) in counts.detail.items():
        mnem, ops = insns.get(pc, ("?", ""))
        if mnem == "?":
            unknown.add(f"0x{pc:x}")
        cls, regs = classify(mnem, ops, core)
        per_zone_classes[z][cls] = per_zone_classes[z].get(cls, 0) + n
        per_zone_cycles[z] += instruction_cost(cls, regs, n, taken, core.timing)
    for z, n in counts.outside.items():  # code outside the firmware's text (none expected)
        per_zone_classes[z]["other"] = per_zone_classes[z].get("other", 0) + n
        per_zone_cycles[z] += n * core.timing.get("other", 1.0)
    total = sum(window)
    clock = est_board.clock_hz
    rows = []

    def row(label, name, op, macs, zs):
        n = sum(window[z] for z in zs)
        classes: dict[str, int] = {}
        for z in zs:
            for k, v in per_zone_classes[z].items():
                classes[k] = classes.get(k, 0) + v
        cyc = sum(per_zone_cycles[z] for z in zs)
        return {"label": label, "name": name, "op": op, "macs": macs, "instructions": n,
                "instructions_per_mac": (n / macs) if macs else None, "share": n / total if total else 0.0,
                "classes": dict(sorted(classes.items())), "est_cycles": round(cyc, 1),
                "est_ms": cyc / clock * 1e3, "functions": [zones[z].name for z in zs if z < nz]}

    for i, layer in enumerate(layers):
        zs = layer_zone.get(i, [])
        r = row(f"{i} {layer['name']}", layer["name"], layer.get("kind", layer["op"]), layer["macs"], zs)
        r["index"] = i
        if not zs:
            r["note"] = "no code of its own (aliases its input, or inlined)"
        rows.append(r)
    rows.append(row("(glue: ek_model_run)", GLUE, "-", 0, [0]))
    if window[nz]:
        rows.append(row("(unattributed)", "", "-", 0, [nz]))
    macs = sum(layer["macs"] for layer in layers)
    cycles = sum(r["est_cycles"] for r in rows)
    assert sum(r["instructions"] for r in rows) == total
    totals = [sum(w) for w in counts.windows]
    return {
        "edgekit_profile": 1,
        "build_dir": str(build_dir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": manifest.target, "board": manifest.board, "counted_on": run_board.qemu_machine,
        "clock_hz": clock,
        "clock_source": f"{est_board.name} clock_hz" + (
            f"; the firmware as built starts at {est_board.reset_clock_hz / 1e6:g} MHz"
            if est_board.reset_clock_hz and est_board.reset_clock_hz != clock else ""),
        "definition": DEFINITION,
        "vector": vector,
        "vectors": {"count": len(totals), "source": source, "instructions": totals, "min": min(totals),
                    "max": max(totals), "mean": sum(totals) / len(totals)},
        "layers": rows,
        "total": {"instructions": total, "macs": macs, "instructions_per_mac": total / macs if macs else None,
                  "est_cycles": round(cycles, 1), "est_ms": cycles / clock * 1e3},
        "whole_run_instructions": counts.all_instructions,
        "timing": core.timing, "timing_source": core.timing_source,
        "memory": {"flash": mem["flash"], "ram": mem["ram"], "weight_symbols": mem["weight_symbols"]},
        "unknown_addresses": sorted(unknown),
    }


def write_profile(build_dir: Path, rep: ProfileReport) -> None:
    data = rep.to_json()
    tmp = build_dir / f".{PROFILE_JSON}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, build_dir / PROFILE_JSON)
    rep.written = [build_dir / PROFILE_JSON, pages.write_page(build_dir / PROFILE_HTML, profile_page(data))]
    record_in_manifest(build_dir, data)


def record_in_manifest(build_dir: Path, data: dict) -> None:
    """The profile's summary in manifest.json (what verify's time limit and the search read)."""
    m = load_manifest(build_dir)
    m.profile = profile_summary(data)
    m.save(build_dir)


def profile_summary(data: dict) -> dict:
    return {"file": PROFILE_JSON, "counted_on": data["counted_on"], "vector": data["vector"],
            "instructions": data["total"]["instructions"], "est_cycles": data["total"]["est_cycles"],
            "est_ms": data["total"]["est_ms"], "clock_hz": data["clock_hz"],
            "stack_used": data["memory"].get("stack_used"),
            "layers": {r["name"] or r["label"]: r["instructions"] for r in data["layers"]}}


def classes_plot(rows: list[dict]) -> str:
    """Estimated cycles of each layer, stacked by instruction class (what the estimate is made of)."""
    classes = sorted({c for r in rows for c in r["classes"]}, key=lambda c: -sum(r["classes"].get(c, 0)
                                                                                 for r in rows))
    with pages.figure("classes", 9.0, 1.2 + 0.26 * max(len(rows), 1)) as fig:
        ax = fig.subplots()
        left = [0.0] * len(rows)
        for k, cls in enumerate(classes):
            counts = [r["classes"].get(cls, 0) for r in rows]
            ax.barh(range(len(rows)), counts, left=left, height=0.7, label=cls,
                    color=pages.PALETTE[k % len(pages.PALETTE)] if k < len(pages.PALETTE) else "#bbb")
            left = [a + b for a, b in zip(left, counts)]
        ax.set_yticks(range(len(rows)), [r["label"][:40] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("executed instructions by class (one inference)")
        ax.grid(axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
        fig.legend(loc="outside right upper", fontsize=8, frameon=False, title="class", title_fontsize=8)
        return pages.svg(fig)


def profile_page(d: dict) -> str:
    """profile.html: instructions per layer (exact), cycles (estimate), instruction classes, memory."""
    rows = d["layers"]
    plots = {
        "instructions": pages.bar_chart("instructions", [r["label"][:40] for r in rows],
                                        [r["instructions"] for r in rows],
                                        f"instructions per inference (exact, counted on QEMU {d['counted_on']})",
                                        [f"{r['instructions']:,} ({100 * r['share']:.1f}%)" for r in rows]),
        "cycles": pages.bar_chart("cycles", [r["label"][:40] for r in rows], [r["est_ms"] for r in rows],
                                  f"ms at {d['clock_hz'] / 1e6:g} MHz (estimate from the instruction classes)",
                                  [f"{r['est_ms']:.3f} ms ({r['est_cycles']:,.0f} cycles)" for r in rows],
                                  color=pages.PALETTE[1]),
        "classes": classes_plot(rows),
    }
    return pages.render("profile.html.j2", d=d, rows=rows, plots=plots)
