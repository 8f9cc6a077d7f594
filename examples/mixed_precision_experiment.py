"""Issue 15 experiment: accuracy against flash for HAWQ assignments, uniform widths and random
assignments, all fine-tuned the same way from the same 8-bit QAT checkpoint.

    PYTHONPATH=. nice -n 5 python examples/mixed_precision_experiment.py -o mp_experiment \
        [--dataset har] [--model zoo:har-cnn] [--epochs 1] [--lr 3e-4] [--ft-seeds 5] [--seeds 10] \
        [--budget-range 2,4] [--budgets 0.4,0.7,1.0] [--checkpoint FILE] [--distill 0.9:4] \
        [--pilot 2:1e-3,1:3e-4,3:1e-3:kd]

Protocol (fixed before looking at any test accuracy; docs/mixed-precision.md):
* one 8-bit QAT checkpoint (``--pretrain-epochs``, seed 0, or ``--checkpoint``);
* Hessian traces from ``--probe-sets`` independent estimates (each ``--probes`` Rademacher
  probes on its own ``--calibration`` random training samples), pooled for the allocation;
  the report gives each estimate and whether the ILP picks the same widths from each alone;
* flash budgets at ``--budgets`` fractions of the way between the ``--budget-range`` uniform
  models' flash;
* every arm -- uniform 8/4/2-bit, the HAWQ assignment at each budget, ``--seeds`` random
  assignments per budget (distinct, drawn uniformly from every assignment whose predicted
  flash lies within the budget and a quarter of the all-2-to-all-8-bit flash range below it)
  -- is fine-tuned ``--epochs`` epochs at ``--lr`` with each of the same ``--ft-seeds`` seeds
  (with ``--distill ALPHA:T`` by knowledge distillation from the 8-bit checkpoint, every arm alike).
  Training is deterministic, so an (assignment, seed) pair met twice (a random draw equal to
  HAWQ's assignment) is run once and its result reused.
* ``--pilot EPOCHS:LR[:kd],...`` instead scores every arm under each schedule on the validation set
  (no builds, test set untouched): how the schedule was chosen.

Every model is built for the board (reference kernels: packed 4/2-bit weights in flash); its
test accuracy is that of the integer model (bit-exact with the firmware). HAWQ models (every
seed) and the uniform models (seed 0) are verified on the emulated core, profiled, and their
measured flash checked against the budget. Writes results.json (rewritten after each model,
so an interrupted run keeps what it measured; ``--table-only`` redoes the tables from it),
table.md, accuracy_flash.svg and report.html into the output directory.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.mixedprec.costs import for_scales, measure_costs
from edgekit.mixedprec.flow import build_and_check, fine_tune, load_data, make_model, pretrain
from edgekit.mixedprec.report import accuracy_flash_svg
from edgekit.qat import evaluate as float_accuracy
from edgekit.qat import export_qonnx
from edgekit.qat.hessian import hutchinson_traces, merge_traces, quant_layers, sensitivities
from edgekit.qat.mixed_precision_alloc import (BIT_CHOICES, allocate, distinct_random_assignments,
                                               feasible_assignments, uniform)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--dataset", default="har")
    ap.add_argument("--model", default="zoo:har-cnn")
    ap.add_argument("--board", default="mps2-an386")
    ap.add_argument("--kernels", default="reference")
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--preset", default="int8-pow2", help="quantizer preset of the zoo model (int8-pow2; "
                    "int8-pow2-pc: one power-of-two weight scale per output channel; its cost table, measured on "
                    "random weights with equal channel scales, misses the per-channel records' flash)")
    ap.add_argument("--checkpoint", help="state dict of the 8-bit QAT starting point (skips pretraining; "
                    "checkpoint-w8.pt of an earlier run)")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of every model (1)")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (Adam, cosine to 0; 3e-4)")
    ap.add_argument("--distill", metavar="ALPHA:T", help="fine-tune every arm by knowledge distillation from the "
                    "8-bit checkpoint: loss = ALPHA * T^2 * KL(teacher || student at temperature T) + (1 - ALPHA) * "
                    "cross-entropy (qat.train.distillation_loss); the pilot's ':kd' schedules use it too (0.9:4)")
    ap.add_argument("--seeds", type=int, default=10, help="distinct random assignments per budget (10; all of "
                    "the band when it holds fewer)")
    ap.add_argument("--ft-seeds", type=int, default=5, help="fine-tuning seeds of every model of every arm (5)")
    ap.add_argument("--first-ft-seed", type=int, default=0, help="seeds first..first+ft-seeds-1 (0; to split "
                    "the seeds over processes, then --merge)")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="with --table-only: add the runs of these output "
                    "directories (same checkpoint, traces and schedule; other fine-tuning seeds or other budgets) to "
                    "this one's; into a new -o directory when it has no results.json yet")
    ap.add_argument("--probes", type=int, default=32, help="Rademacher probes per trace estimate (32)")
    ap.add_argument("--probe-sets", type=int, default=2, help="independent trace estimates, pooled (2)")
    ap.add_argument("--calibration", type=int, default=512, help="training samples per trace estimate (512)")
    ap.add_argument("--budgets", default="0.4,0.7,1.0", help="flash budgets as fractions of the way between the "
                    "--budget-range uniform models' predicted flash (0.4,0.7,1.0)")
    ap.add_argument("--budget-range", default="2,4", help="the two uniform widths whose flash the --budgets "
                    "fractions lie between (2,4: where the widths matter; 1.0 is the uniform 4-bit model's flash)")
    ap.add_argument("--pilot", metavar="SCHEDULES", help="choose the fine-tuning schedule on the validation set: "
                    "every arm fine-tuned with each EPOCHS:LR[:kd] schedule (e.g. 2:1e-3,1:3e-4,3:1e-3:kd; "
                    "':kd' distils from the checkpoint with --distill's ALPHA:T) and each "
                    "fine-tuning seed, scored on the validation set (brevitas, no builds); writes pilot.md")
    ap.add_argument("--skip-zero-shot", action="store_true", help="leave out the before-fine-tuning measurements")
    ap.add_argument("--table-only", action="store_true", help="rewrite the tables and the plot from results.json")
    ap.add_argument("--zero-shot-only", action="store_true", help="add the before-fine-tuning measurements "
                    "(zero_shot.json) to an earlier run's output, then rewrite the tables")
    args = ap.parse_args()
    out = Path(args.output)
    try:
        alpha, temp = (float(v) for v in (args.distill or "0.9:4").split(":"))
        if not 0 <= alpha <= 1 or temp <= 0:
            raise ValueError
        args.kd = (alpha, temp)
    except ValueError:
        print(f"error: --distill {args.distill}: give ALPHA:T with 0 <= ALPHA <= 1 and T > 0, e.g. 0.9:4",
              file=sys.stderr)
        return 2
    try:
        args.pilot_schedules = []
        for sched in args.pilot.split(",") if args.pilot else []:
            e, lr, *kd = sched.split(":")
            if kd not in ([], ["kd"]):
                raise ValueError
            args.pilot_schedules.append((int(e), float(lr), bool(kd)))
    except ValueError:
        print(f"error: --pilot {args.pilot}: give EPOCHS:LR[:kd] schedules, e.g. 1:3e-4,2:1e-3,3:1e-3:kd",
              file=sys.stderr)
        return 2
    try:
        widths = [int(b) for b in args.budget_range.split(",")]
        if len(widths) != 2 or not set(widths) <= set(BIT_CHOICES):
            raise ValueError
        args.budget_range = widths
    except ValueError:
        print(f"error: --budget-range {args.budget_range}: give two of the widths "
              f"{','.join(map(str, BIT_CHOICES))}, e.g. 2,4", file=sys.stderr)
        return 2
    if args.table_only or args.zero_shot_only:
        merge = [Path(m) for m in args.merge or []]
        if not (out / "results.json").exists() and merge:  # a new directory for the merged runs
            out.mkdir(parents=True, exist_ok=True)
            results = json.loads((merge.pop(0) / "results.json").read_text())
            results["seconds"] = {}
        else:
            results = json.loads((out / "results.json").read_text())
        for other in merge:
            more = json.loads((other / "results.json").read_text())
            if more["omega"] != results["omega"] or more.get("checkpoint") != results.get("checkpoint") or \
                    (more["epochs"], more.get("lr"), more.get("distill")) != \
                    (results["epochs"], results.get("lr"), results.get("distill")):
                print(f"error: {other}: not the same checkpoint, traces and fine-tuning schedule as {out}; cannot "
                      "merge", file=sys.stderr)
                return 2
            # other fine-tuning seeds of the same plan, or other budgets (another --budget-range)
            results["plan"] += [p for p in more["plan"] if p["budget"] not in {q["budget"] for q in results["plan"]}]
            results["budgets"] = [p["budget"] for p in results["plan"]]
            have = {(r["kind"], r["budget"], r["assignment"], r["seed"]) for r in results["runs"]}
            results["runs"] += [r for r in more["runs"] if (r["kind"], r["budget"], r["assignment"], r["seed"]) not in have]
        if args.merge:
            (out / "results.json").write_text(json.dumps(results, indent=1))
        if args.zero_shot_only:
            torch.set_num_threads(1)
            data = load_data(results["dataset_name"])
            model = make_model(results["model"], data, preset=results.get("preset", "int8-pow2"))
            # the cost table again (deterministic: the same calibrated random weights), for the band
            costs = measure_costs(model, torch.as_tensor(data.x_train[:1]), "cortex-m4", results["board"],
                                  out / "costs", kernels=results["kernels"])
            model.load_state_dict(torch.load(results["checkpoint"] or out / "checkpoint-w8.pt", weights_only=True))
            costs = for_scales(costs, model, torch.as_tensor(data.x_train[:1]))
            zero_shot(model.eval(), data, np.array(results["omega"]), costs, out)
        write_tables(results, out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    torch.set_num_threads(1)  # a shared 2-core machine

    data = load_data(args.dataset)
    model = make_model(args.model, data, preset=args.preset)
    example = torch.as_tensor(data.x_train[:1])
    target = "cortex-m4"
    costs = measure_costs(model, example, target, args.board, out / "costs", kernels=args.kernels)
    t_cost = time.monotonic() - t0
    t = time.monotonic()
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
    else:
        pretrain(model, data, args.pretrain_epochs, 0)
        torch.save(model.state_dict(), out / "checkpoint-w8.pt")
    model.eval()
    costs = for_scales(costs, model, example)  # per-channel presets: the checkpoint's scale pattern per layer and width
    t_pre = time.monotonic() - t

    # Hessian traces: independent estimates (own probes, own calibration samples), pooled
    t = time.monotonic()
    layers = quant_layers(model, example)
    estimates = []
    for s in range(args.probe_sets):
        sel = np.random.default_rng(s).permutation(len(data.x_train))[:args.calibration]
        estimates.append(hutchinson_traces(model, torch.as_tensor(data.x_train[sel]), torch.as_tensor(data.y_train[sel]),
                                           probes=args.probes, seed=s, layers=layers))
    pooled = merge_traces(*estimates)
    omega = sensitivities(layers, pooled, costs.bit_choices)
    omega_each = [sensitivities(layers, e, costs.bit_choices) for e in estimates]
    t_sens = time.monotonic() - t
    stability = [{"layer": p.name, "params": p.n_params, "trace": p.trace_mean, "stderr": p.trace_stderr,
                  "sets": [[e[i].trace_mean, e[i].trace_stderr] for e in estimates]} for i, p in enumerate(pooled)]

    lo = costs.base["flash"] + costs.per_layer["flash"].min(axis=1).sum()
    hi = costs.base["flash"] + costs.per_layer["flash"].max(axis=1).sum()
    r_lo, r_hi = (uniform(omega, costs, b).predicted["flash"] for b in args.budget_range)
    budgets = [round(r_lo + f * (r_hi - r_lo)) for f in map(float, args.budgets.split(","))]
    band = 0.25 * (hi - lo)  # random draws share the budget's band of flash, not any smaller model
    plan = []
    for budget in budgets:
        hawq = allocate(omega, costs, {"flash": budget})
        pool = feasible_assignments(omega, costs, {"flash": budget}, {"flash": budget - band})
        rnd = distinct_random_assignments(omega, costs, {"flash": budget}, args.seeds, np.random.default_rng(budget),
                                          {"flash": budget - band})
        plan.append({"budget": budget, "hawq": hawq, "random": rnd, "band_size": len(pool),
                     "hawq_in_band": any(a.choice == hawq.choice for a in pool),
                     "hawq_from_each_set": [[allocate(o, costs, {"flash": budget}).bits[n] for n in costs.layers]
                                            for o in omega_each]})
    if args.pilot:
        pilot(model, data, omega, costs, plan, args, out,
              {"cost_table": t_cost, "pretrain": t_pre, "sensitivity": t_sens})
        return 0
    t = time.monotonic()
    if not args.skip_zero_shot:
        zero_shot(model, data, omega, costs, out)
    t_zero = time.monotonic() - t
    results = {"dataset_name": args.dataset, "dataset": data.description, "model": args.model, "board": args.board,
               "kernels": args.kernels, "preset": args.preset, "epochs": args.epochs, "lr": args.lr,
               "distill": list(args.kd) if args.distill else None, "budget_range": args.budget_range,
               "budget_fractions": args.budgets, "pretrain_epochs": 0 if args.checkpoint else
               args.pretrain_epochs, "checkpoint": args.checkpoint, "probes": args.probes,
               "probe_sets": args.probe_sets, "calibration": args.calibration, "ft_seeds": args.ft_seeds,
               "checkpoint_test_accuracy": float_accuracy(model, data.x_test, data.y_test),
               "stability": stability, "omega": omega.tolist(), "layers": costs.layers, "bit_choices":
               list(costs.bit_choices), "flash_range": [lo, hi], "budgets": budgets,
               "plan": [{"budget": p["budget"], "hawq": [p["hawq"].bits[n] for n in costs.layers],
                         "hawq_sensitivity": p["hawq"].sensitivity, "band_size": p["band_size"],
                         "hawq_in_band": p["hawq_in_band"], "hawq_from_each_set": p["hawq_from_each_set"],
                         "random": [[a.bits[n] for n in costs.layers] for a in p["random"]],
                         "random_sensitivity": [a.sensitivity for a in p["random"]]} for p in plan],
               "runs": [], "seconds": {"cost_table": t_cost, "pretrain": t_pre, "sensitivity": t_sens, "zero_shot": t_zero}}
    done: dict[tuple, dict] = {}  # (bits, fine-tuning seed) -> measurements

    def evaluate(kind, alloc, budget, seed, verify_it, tag=None):
        t1 = time.monotonic()
        bits = [alloc.bits[n] for n in costs.layers]
        key = (tuple(bits), seed)
        if key in done and (done[key].get("bit_exact") is not None or not verify_it):
            m, reused = done[key], True
        else:
            tuned = fine_tune(model, bits, data, args.epochs, seed, lr=args.lr,
                              distill=args.kd if args.distill else None)
            d = out / "models" / f"{'-'.join(map(str, bits))}-s{seed}"
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
            m = {k: m.get(k) for k in ("flash_bytes", "ram_bytes", "int_test_accuracy", "bit_exact", "instructions",
                                       "latency_ms")}
            done[key], reused = m, False
        row = {"kind": kind, "budget": budget, "seed": seed, "assignment": tag, "bits": bits,
               "sensitivity": alloc.sensitivity, "predicted_flash": alloc.predicted["flash"], "reused": reused,
               "seconds": time.monotonic() - t1, **m}
        if budget is not None:
            row["within_budget"] = m["flash_bytes"] <= budget
        results["runs"].append(row)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"{kind:>8} budget {budget} seed {seed}: {' '.join(map(str, bits))} flash {m['flash_bytes']} "
              f"acc {m['int_test_accuracy']:.4f} ({row['seconds']:.0f} s{', reused' if reused else ''})", flush=True)

    # seed-major: a run stopped early still compares every arm over the same seeds
    for fs in range(args.first_ft_seed, args.first_ft_seed + args.ft_seeds):
        for b in (8, 4, 2):
            evaluate(f"uniform{b}", uniform(omega, costs, b), None, fs, fs == args.first_ft_seed)
        for p in plan:
            evaluate("hawq", p["hawq"], p["budget"], fs, True)
            for s, a in enumerate(p["random"]):
                evaluate("random", a, p["budget"], fs, False, tag=s)
    results["seconds"]["total"] = time.monotonic() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_tables(results, out)
    return 0


def pilot(model, data, omega: np.ndarray, costs, plan: list[dict], args, out: Path, seconds: dict) -> list[dict]:
    """The schedule choice, on the validation set: every arm (uniform 8/4/2-bit, HAWQ and the
    random draws at every budget) fine-tuned with each ``--pilot`` EPOCHS:LR schedule and each
    fine-tuning seed, scored by the brevitas model (equal to the integer model with power-of-two
    scales) on the validation set; 0:0 is the checkpoint with the widths applied, untrained.
    Writes pilot.json and pilot.md. The test set is not touched."""
    schedules = args.pilot_schedules
    arms = [(f"uniform{b}", None, [b] * len(costs.layers)) for b in (8, 4, 2)]
    for p in plan:
        arms.append(("hawq", p["budget"], [p["hawq"].bits[n] for n in costs.layers]))
        arms += [("random", p["budget"], [a.bits[n] for n in costs.layers]) for a in p["random"]]
    seeds = range(args.first_ft_seed, args.first_ft_seed + args.ft_seeds)
    acc: dict[tuple, float] = {}
    t0 = time.monotonic()
    for epochs, lr, kd in [(0, 0.0, False)] + schedules:
        for _, _, bits in arms:
            for seed in seeds if epochs else seeds[:1]:
                if (epochs, lr, kd, tuple(bits), seed) not in acc:
                    tuned = fine_tune(model, bits, data, epochs, seed, lr=lr, distill=args.kd if kd else None)
                    acc[(epochs, lr, kd, tuple(bits), seed)] = float_accuracy(tuned, data.x_val, data.y_val)
    lines = [f"Pilot on the validation set ({len(data.x_val)} samples; one is {1 / len(data.x_val):.4f}): mean "
             f"accuracy over fine-tuning seeds {', '.join(map(str, seeds))}; random = mean over the band's draws", "",
             "| schedule (epochs:lr) | uniform 8 | uniform 4 | uniform 2 | "
             + " | ".join(f"HAWQ at {p['budget']:,} B | random at {p['budget']:,} B" for p in plan) + " |",
             "|---|---|---|---|" + "---|---|" * len(plan)]
    rows = []
    for epochs, lr, kd in [(0, 0.0, False)] + schedules:
        def mean(bits):
            return float(np.mean([acc[(epochs, lr, kd, tuple(bits), s)] for s in (seeds if epochs else seeds[:1])]))
        row = {"epochs": epochs, "lr": lr, "distill": list(args.kd) if kd else None,
               **{k: mean(b) for k, _, b in arms[:3]}, "budgets": []}
        for p in plan:
            h = mean([p["hawq"].bits[n] for n in costs.layers])
            r = float(np.mean([mean([a.bits[n] for n in costs.layers]) for a in p["random"]]))
            row["budgets"].append({"budget": p["budget"], "hawq": h, "random_mean": r})
        rows.append(row)
        name = f"{epochs}:{lr:g}" + (f" + KD {args.kd[0]:g}:{args.kd[1]:g}" if kd else "")
        lines.append(f"| {'none (untrained)' if not epochs else name} | {row['uniform8']:.4f} | "
                     f"{row['uniform4']:.4f} | {row['uniform2']:.4f} | "
                     + " | ".join(f"{b['hawq']:.4f} | {b['random_mean']:.4f}" for b in row["budgets"]) + " |")
    seconds["pilot_fine_tuning"] = time.monotonic() - t0
    lines += ["", "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())]
    (out / "pilot.json").write_text(json.dumps({"seeds": list(seeds), "rows": rows, "seconds": seconds,
                                                "runs": [[*k[:3], list(k[3]), k[4], v] for k, v in acc.items()]},
                                               indent=1))
    (out / "pilot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def zero_shot(model, data, omega: np.ndarray, costs, out: Path, samples: int = 2048) -> list[dict]:
    """Every assignment applied to the checkpoint without fine-tuning: the training loss's
    increase (what HAWQ's sensitivity approximates: 1/2 sum Tr(H_l)/n_l ||Q(W_l) - W_l||^2
    to second order) on ``samples`` training samples not used for the traces' first
    estimate, and the test accuracy (brevitas). Written to zero_shot.json."""
    import copy
    import itertools

    from edgekit.qat.mixed_precision_alloc import apply_bits

    bit_choices = list(costs.bit_choices)
    sel = np.random.default_rng(1000).permutation(len(data.x_train))[:samples]
    x, y = torch.as_tensor(data.x_train[sel]), torch.as_tensor(data.y_train[sel])
    example = x[:1]
    loss_fn = torch.nn.CrossEntropyLoss()

    def loss_of(m) -> float:
        with torch.no_grad():
            return float(loss_fn(m(x), y))

    base = loss_of(model)
    rows = []
    for choice in itertools.product(range(len(bit_choices)), repeat=omega.shape[0]):
        m = copy.deepcopy(model)
        bits = [bit_choices[j] for j in choice]
        apply_bits(m, bits, example)
        m.eval()
        rows.append({"bits": bits, "sensitivity": float(sum(omega[i, j] for i, j in enumerate(choice))),
                     "predicted_flash": costs.total("flash", list(choice)),
                     "loss_increase": loss_of(m) - base, "test_accuracy": float_accuracy(m, data.x_test, data.y_test)})
    (out / "zero_shot.json").write_text(json.dumps({"base_loss": base, "samples": samples, "rows": rows}, indent=1))
    return rows


def _stats(rows: list[dict]) -> tuple[float, float, int]:
    acc = np.array([r["int_test_accuracy"] for r in rows])
    return float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, len(acc)


def _bits(bits) -> str:
    return " ".join(map(str, bits.values() if isinstance(bits, dict) else bits))


def write_tables(results: dict, out: Path) -> None:
    """table.md (accuracy table, HAWQ against the baselines, trace stability), the plot and
    report.html, from results.json."""
    from scipy.stats import spearmanr

    # only fine-tuning seeds every arm finished (an interrupted run's last seed is left out)
    planned = 3 + sum(1 + len(p["random"]) for p in results["plan"])
    seeds = sorted(s for s in {r["seed"] for r in results["runs"]}
                   if sum(r["seed"] == s for r in results["runs"]) >= planned)
    partial = sorted({r["seed"] for r in results["runs"]} - set(seeds))
    runs = [r for r in results["runs"] if r["seed"] in seeds]
    n_seeds = len(seeds)
    lines = [f"{results['model']} on {results['dataset']}; {results['epochs']} fine-tuning epoch(s) at learning "
             f"rate {results.get('lr', 1e-3):g}"
             + (f" by distillation from the checkpoint (alpha {results['distill'][0]:g}, T {results['distill'][1]:g})"
                if results.get("distill") else "") + ", "
             f"fine-tuning seeds {', '.join(map(str, seeds))} for every model; 8-bit checkpoint "
             f"{results['checkpoint_test_accuracy']:.4f} (brevitas, before fine-tuning)"
             + (f"; seed(s) {', '.join(map(str, partial))} left out: not finished for every arm" if partial else ""), "",
             "| model | flash budget (B) | bits per layer | measured flash (B) | test accuracy (mean +- std) |",
             "|---|---|---|---|---|"]
    pts, uniform_rows = [], {}
    for b in (8, 4, 2):
        rows = [r for r in runs if r["kind"] == f"uniform{b}"]
        if rows:
            m, sd, n = _stats(rows)
            uniform_rows[b] = (rows[0]["flash_bytes"], m, sd, n)
            lines.append(f"| uniform {b}-bit (x{n} runs) | - | {_bits(rows[0]['bits'])} | {rows[0]['flash_bytes']:,} | "
                         f"{m:.4f} +- {sd:.4f} |")
            pts.append({"flash": rows[0]["flash_bytes"], "accuracy": m, "accuracy_std": sd, "label": f"uniform{b}",
                        "series": "uniform 8/4/2-bit"})
    verdicts = ["", "| budget (B) | HAWQ - random mean | +- (std. error) | HAWQ above random mean | "
                "HAWQ - next larger uniform | +- (std. error) | HAWQ >= every uniform of equal or larger flash | "
                "assignments in the band | HAWQ bits from each trace estimate alone |",
                "|---|---|---|---|---|---|---|---|---|"]
    per_assignment = []  # (sensitivity, mean accuracy) of every assignment evaluated at a budget
    for p in results["plan"]:
        b = p["budget"]
        h = [r for r in runs if r["kind"] == "hawq" and r["budget"] == b]
        rnd = [r for r in runs if r["kind"] == "random" and r["budget"] == b]
        if not h:
            continue
        hm, hsd, hn = _stats(h)
        lines.append(f"| HAWQ (x{hn} runs) | {b:,} | {_bits(h[0]['bits'])} | {h[0]['flash_bytes']:,} | "
                     f"{hm:.4f} +- {hsd:.4f} |")
        pts.append({"flash": h[0]["flash_bytes"], "accuracy": hm, "accuracy_std": hsd, "label": "HAWQ",
                    "series": "HAWQ (ILP)"})
        per_assignment.append((h[0]["sensitivity"], hm))
        if rnd:
            rm, rsd, rn = _stats(rnd)
            fl = np.array([r["flash_bytes"] for r in rnd])
            draws = sorted({r["assignment"] for r in rnd})
            means = []
            for a in draws:
                ra = [r for r in rnd if r["assignment"] == a]
                means.append(_stats(ra)[0])
                per_assignment.append((ra[0]["sensitivity"], means[-1]))
            names = ", ".join(_bits(next(r for r in rnd if r["assignment"] == a)["bits"]) for a in draws)
            lines.append(f"| random ({len(draws)} assignments x {rn // len(draws)} runs) | {b:,} | {names} | "
                         f"{fl.mean():,.0f} (max {fl.max():,}) | {rm:.4f} +- {rsd:.4f} (assignments' means "
                         f"{min(means):.4f}-{max(means):.4f}) |")
            pts.append({"flash": float(fl.mean()), "accuracy": rm, "accuracy_std": rsd, "label": "random",
                        "series": "random assignments (mean +- std)"})
            se = float(np.sqrt(hsd ** 2 / hn + rsd ** 2 / rn))
            larger = sorted((f, m, sd, n, ub) for ub, (f, m, sd, n) in uniform_rows.items() if f >= h[0]["flash_bytes"])
            behind = [f"uniform {ub}-bit {m:.4f}" for _, m, _, _, ub in larger if hm < m - 1e-9]  # float sums
            if larger:
                f, m, sd, n, ub = larger[0]
                near = f"{hm - m:+.4f} (uniform {ub}-bit) | {np.sqrt(hsd ** 2 / hn + sd ** 2 / n):.4f}"
            else:
                near = "- | -"
            verdicts.append(f"| {b:,} | {hm - rm:+.4f} | {se:.4f} | {'yes' if hm > rm else 'no'} | {near} | "
                            f"{'-' if not larger else 'no (' + ', '.join(behind) + ')' if behind else 'yes'} | "
                            f"{p['band_size']} | " + "; ".join(_bits(x) for x in p["hawq_from_each_set"]) + " |")
    lines += verdicts
    if len(per_assignment) >= 3:
        rho, pval = spearmanr([s for s, _ in per_assignment], [a for _, a in per_assignment])
        lines += ["", f"Spearman rank correlation of predicted sensitivity (sum of Omega) and mean accuracy over the "
                  f"{len(per_assignment)} budgeted assignments: {rho:+.2f} (p = {pval:.2g}; negative = sensitivity "
                  "predicts accuracy)"]
    zs_path = out / "zero_shot.json"
    if zs_path.exists():
        zs = json.loads(zs_path.read_text())["rows"]
        by_bits = {tuple(r["bits"]): r for r in zs}
        rho_l, _ = spearmanr([r["sensitivity"] for r in zs], [r["loss_increase"] for r in zs])
        rho_a, _ = spearmanr([r["sensitivity"] for r in zs], [r["test_accuracy"] for r in zs])
        lines += ["", f"Before fine-tuning (every one of the {len(zs)} assignments applied to the checkpoint): Spearman "
                  f"correlation of the sensitivity with the training loss's increase {rho_l:+.2f}, with test accuracy "
                  f"{rho_a:+.2f}.", "",
                  "| budget (B) | HAWQ: loss increase, rank in the band | HAWQ: test accuracy | band: best, mean test "
                  "accuracy | random draws: mean test accuracy |", "|---|---|---|---|---|"]
        lo, hi = results["flash_range"]
        for p in results["plan"]:
            h = by_bits[tuple(p["hawq"])]
            band = [by_bits[tuple(r["bits"])] for r in runs if r["kind"] == "random" and r["budget"] == p["budget"]]
            # the band: the assignments the random draws came from (predicted flash within it)
            pool = [r for r in zs if p["budget"] - 0.25 * (hi - lo) <= r["predicted_flash"] <= p["budget"]]
            rank = 1 + sum(r["loss_increase"] < h["loss_increase"] for r in pool)
            lines.append(f"| {p['budget']:,} | {h['loss_increase']:.4f}, {rank} of {len(pool)} | "
                         f"{h['test_accuracy']:.4f} | {max(r['test_accuracy'] for r in pool):.4f}, "
                         f"{np.mean([r['test_accuracy'] for r in pool]):.4f} | "
                         f"{np.mean([r['test_accuracy'] for r in band]) if band else float('nan'):.4f} |")
    sets = len(results["stability"][0]["sets"]) if results["stability"] else 0
    lines += ["", "| layer | params | Tr(H) pooled | +- | " + " | ".join(f"Tr(H) estimate {i + 1} | +-" for i in range(sets))
              + " |", "|---|---|---|---|" + "---|---|" * sets]
    for s in results["stability"]:
        lines.append(f"| {s['layer']} | {s['params']} | {s['trace']:.4g} | {s['stderr']:.2g} | "
                     + " | ".join(f"{t:.4g} | {e:.2g}" for t, e in s["sets"]) + " |")
    hawq_runs = [r for r in runs if r["kind"] == "hawq"]
    # a model met twice (a random draw equal to HAWQ's or a uniform assignment) was built and verified once
    checked = list({(tuple(r["bits"]), r["seed"]): r for r in runs if r.get("bit_exact") is not None}.values())
    lines += ["", f"verified on {results['board']}: {sum(bool(r['bit_exact']) for r in checked)} of {len(checked)} "
              f"distinct models bit-exact; HAWQ models within their flash budget as measured: "
              f"{sum(bool(r['within_budget']) for r in hawq_runs)} of {len(hawq_runs)}",
              "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items())]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    name = results.get("dataset_name") or results["dataset"].split(" ")[0]
    svg = accuracy_flash_svg(pts, out / "accuracy_flash.svg", f"{results['model']} on {name}: integer test accuracy "
                             f"after {results['epochs']} fine-tuning epoch{'s' if results['epochs'] != 1 else ''} "
                             f"({n_seeds} seed{'s' if n_seeds != 1 else ''})")
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>mixed precision experiment</title>"
        f"<h1>{html.escape(results['model'])} on {html.escape(name)}</h1>"
        f"{svg.read_text()[svg.read_text().find('<svg'):]}"
        f"<pre>{html.escape(chr(10).join(lines))}</pre>\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
