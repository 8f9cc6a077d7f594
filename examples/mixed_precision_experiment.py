"""Issue 15 experiment: accuracy against flash for HAWQ assignments, uniform widths and random
assignments, all fine-tuned the same number of epochs from the same 8-bit QAT checkpoint.

    PYTHONPATH=. nice -n 5 python examples/mixed_precision_experiment.py -o mp_experiment \
        [--dataset har] [--model zoo:har-cnn] [--train-subset 3000] [--epochs 2] [--seeds 5]

Every model is built for the board (reference kernels: packed 4/2-bit weights in flash) and
its test accuracy is that of the integer model (bit-exact with the firmware); the HAWQ and
uniform models are also verified on the emulated core. Writes results.json, table.md and
accuracy_flash.svg into the output directory (results.json is rewritten after each model,
so an interrupted run keeps what it measured).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.mixedprec.costs import measure_costs
from edgekit.mixedprec.flow import build_and_check, fine_tune, load_data, make_model, pretrain, sensitivity
from edgekit.mixedprec.report import accuracy_flash_svg
from edgekit.nas.datasets import NasData
from edgekit.qat import export_qonnx
from edgekit.qat.hessian import hutchinson_traces, quant_layers
from edgekit.qat.mixed_precision_alloc import allocate, random_assignment, uniform


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--dataset", default="har")
    ap.add_argument("--model", default="zoo:har-cnn")
    ap.add_argument("--board", default="mps2-an386")
    ap.add_argument("--kernels", default="reference")
    ap.add_argument("--train-subset", type=int, default=0, help="training samples (0: all)")
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5, help="random assignments per budget (5)")
    ap.add_argument("--ft-seeds", type=int, default=3, help="fine-tuning seeds of the HAWQ and uniform models; "
                    "each random assignment is fine-tuned with seed 0 (3)")
    ap.add_argument("--random-ft-seeds", type=int, default=1, help="fine-tuning seeds of each random assignment "
                    "(1: seed 0; --ft-seeds gives every arm the same fine-tuning)")
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--budgets", default="0.3,0.5,0.7", help="flash budgets as fractions between the all-2-bit "
                    "and the all-8-bit model's predicted flash")
    ap.add_argument("--table-only", action="store_true", help="rewrite table.md and the plot from results.json")
    args = ap.parse_args()
    out = Path(args.output)
    if args.table_only:
        write_table(json.loads((out / "results.json").read_text()), out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    torch.set_num_threads(1)  # a shared 2-core machine

    full = load_data(args.dataset)
    n_train = args.train_subset if 0 < args.train_subset < len(full.x_train) else len(full.x_train)
    idx = np.sort(np.random.default_rng(0).permutation(len(full.x_train))[:n_train])
    data = NasData(full.name, full.x_train[idx], full.y_train[idx], full.x_val, full.y_val, full.x_test,
                   full.y_test, full.class_names, full.description + f"; {len(idx)} training windows")
    model = make_model(args.model, data)
    example = torch.as_tensor(data.x_train[:1])
    target = "cortex-m4"
    costs = measure_costs(model, example, target, args.board, out / "costs", kernels=args.kernels)
    t_cost = time.monotonic() - t0
    pretrain(model, data, args.pretrain_epochs, 0)
    t_pre = time.monotonic() - t0 - t_cost

    # Hessian traces, twice with independent probes: their agreement is the estimate's stability
    t = time.monotonic()
    traces, omega = sensitivity(model, data, costs, args.probes, 512, seed=0)
    t_sens = time.monotonic() - t
    layers = quant_layers(model, example)
    sel = np.random.default_rng(0).permutation(len(data.x_train))[:512]
    traces_b = hutchinson_traces(model, torch.as_tensor(data.x_train[sel]), torch.as_tensor(data.y_train[sel]),
                                 probes=args.probes, seed=1, layers=layers)
    stability = [{"layer": a.name, "params": a.n_params, "trace_seed0": a.trace_mean, "stderr_seed0": a.trace_stderr,
                  "trace_seed1": b.trace_mean, "stderr_seed1": b.trace_stderr} for a, b in zip(traces, traces_b)]

    lo = costs.base["flash"] + costs.per_layer["flash"].min(axis=1).sum()
    hi = costs.base["flash"] + costs.per_layer["flash"].max(axis=1).sum()
    budgets = [round(lo + f * (hi - lo)) for f in map(float, args.budgets.split(","))]
    results = {"dataset_name": args.dataset, "dataset": data.description, "model": args.model, "board": args.board, "kernels": args.kernels,
               "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs, "probes": args.probes,
               "ft_seeds": args.ft_seeds, "random_ft_seeds": args.random_ft_seeds,
               "stability": stability, "omega": omega.tolist(), "layers": costs.layers,
               "flash_range": [lo, hi], "budgets": budgets, "runs": [],
               "seconds": {"cost_table": t_cost, "pretrain": t_pre, "sensitivity": t_sens}}

    def evaluate(kind, alloc, budget, seed, verify_it, tag=None):
        t1 = time.monotonic()
        bits = [alloc.bits[n] for n in costs.layers]
        tuned = fine_tune(model, bits, data, args.epochs, seed)
        d = out / "models" / f"{kind}-{budget}-{seed if tag is None else f'a{tag}'}"
        d.mkdir(parents=True, exist_ok=True)
        onnx = export_qonnx(tuned, example, d / "model.onnx")
        if verify_it:
            m = build_and_check(onnx, target, args.board, d, data, args.kernels, say=lambda *_: None)
        else:
            from edgekit.api import build
            from edgekit.nas.finalize import integer_accuracy

            res = build(onnx, target, args.board, d / "build", kernels=args.kernels)
            m = {"flash_bytes": res.manifest.memory["flash_bytes"], "ram_bytes": res.manifest.memory["ram_bytes"],
                 "int_test_accuracy": integer_accuracy(d / "build", data.x_test, data.y_test)}
        row = {"kind": kind, "budget": budget, "seed": seed, "assignment": tag, "bits": alloc.bits, "sensitivity": alloc.sensitivity,
               "predicted_flash": alloc.predicted["flash"], "seconds": time.monotonic() - t1,
               **{k: m.get(k) for k in ("flash_bytes", "ram_bytes", "int_test_accuracy", "bit_exact",
                                        "instructions", "latency_ms")}}
        if budget is not None:
            row["within_budget"] = m["flash_bytes"] <= budget
        results["runs"].append(row)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"{kind:>8} budget {budget} seed {seed}: {' '.join(map(str, bits))} flash {m['flash_bytes']} "
              f"acc {m['int_test_accuracy']:.4f} ({row['seconds']:.0f} s)", flush=True)

    for b in (8, 4, 2):
        for fs in range(args.ft_seeds):
            evaluate(f"uniform{b}", uniform(omega, costs, b), None, fs, fs == 0)
    for budget in budgets:
        for fs in range(args.ft_seeds):
            evaluate("hawq", allocate(omega, costs, {"flash": budget}), budget, fs, True)
        rng = np.random.default_rng(budget)
        floor = budget - 0.25 * (hi - lo)  # same band of flash as the budget, not any smaller model
        for s in range(args.seeds):
            a = random_assignment(omega, costs, {"flash": budget}, rng)
            while a.predicted["flash"] < floor:
                a = random_assignment(omega, costs, {"flash": budget}, rng)
            for fs in range(args.random_ft_seeds):
                evaluate("random", a, budget, fs, False, tag=s)
    results["seconds"]["total"] = time.monotonic() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_table(results, out)
    return 0


def write_table(results: dict, out: Path) -> None:
    runs = results["runs"]
    lines = ["| model | flash budget (B) | bits per layer | measured flash (B) | test accuracy |", "|---|---|---|---|---|"]
    pts = []

    def stats(rows):
        acc = np.array([r["int_test_accuracy"] for r in rows])
        return acc.mean(), (acc.std(ddof=1) if len(acc) > 1 else 0.0), len(acc)

    for b in (8, 4, 2):
        rows = [r for r in runs if r["kind"] == f"uniform{b}"]
        if rows:
            m, sd, n = stats(rows)
            lines.append(f"| uniform {b}-bit (x{n} fine-tuning seeds) | - | {' '.join(str(v) for v in rows[0]['bits'].values())} "
                         f"| {rows[0]['flash_bytes']:,} | {m:.4f} +- {sd:.4f} |")
            pts.append({"flash": rows[0]["flash_bytes"], "accuracy": m, "accuracy_std": sd, "label": f"uniform{b}",
                        "series": "uniform 8/4/2-bit"})
    for b in results["budgets"]:
        h = [r for r in runs if r["kind"] == "hawq" and r["budget"] == b]
        rnd = [r for r in runs if r["kind"] == "random" and r["budget"] == b]
        if h:
            m, sd, n = stats(h)
            lines.append(f"| HAWQ (x{n} fine-tuning seeds) | {b:,} | {' '.join(str(v) for v in h[0]['bits'].values())} | "
                         f"{h[0]['flash_bytes']:,} | {m:.4f} +- {sd:.4f} |")
            pts.append({"flash": h[0]["flash_bytes"], "accuracy": m, "accuracy_std": sd, "label": "HAWQ",
                        "series": "HAWQ (ILP)"})
        if rnd:
            m, sd, n = stats(rnd)
            fl = np.array([r["flash_bytes"] for r in rnd])
            first = [r for r in rnd if r["seed"] == 0]
            runs_per = f"x{len(first)} assignments" + (f" x {n // len(first)} fine-tuning seeds" if len(first) < n else "")
            lines.append(f"| random ({runs_per}) | {b:,} | " + ", ".join(
                " ".join(str(v) for v in r["bits"].values()) for r in first) + f" | {fl.mean():,.0f} (max {fl.max():,}) | "
                f"{m:.4f} +- {sd:.4f} |")
            pts.append({"flash": float(fl.mean()), "accuracy": m, "accuracy_std": sd, "label": "random",
                        "series": "random assignments (mean +- std)"})
    lines += ["", "| layer | params | Tr(H) seed 0 | +- | Tr(H) seed 1 | +- |", "|---|---|---|---|---|---|"]
    for s in results["stability"]:
        lines.append(f"| {s['layer']} | {s['params']} | {s['trace_seed0']:.4g} | {s['stderr_seed0']:.2g} | "
                     f"{s['trace_seed1']:.4g} | {s['stderr_seed1']:.2g} |")
    lines.append("")
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    name = results.get("dataset_name") or results["dataset"].split(" ")[0]
    accuracy_flash_svg(pts, out / "accuracy_flash.svg", f"{results['model']} on {name}: test accuracy after "
                       f"{results['epochs']} fine-tuning epochs")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
