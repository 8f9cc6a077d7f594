"""After the search: check the models it returns, retrain the best if asked, export it,
write the report (the documents themselves come from :mod:`.rendering`).

Every model on the Pareto front (up to ``verify_top``, best validation accuracy first)
is checked before it is returned:

* built for the **board** with ``edgekit.api.build`` (which refuses a model that does not
  fit the board's flash or RAM), and its RAM/flash compared with the budgets;
* built for the **QEMU board with the same core** (the stand-in, e.g. mps2-an386 for a
  NUCLEO-L4R5ZI's Cortex-M4; a board that QEMU emulates is its own stand-in): the
  generated C must be byte-identical to the board build's, and ``edgekit.api.verify``
  must find every stage bit-exact on 256 real test windows and on 64 generated vectors
  that cover the input quantizer's range;
* profiled (``edgekit profile``: exact instruction counts on the stand-in, cycle estimate
  at the board's clock); the **measured** latency is compared with the budget, so a model
  that only fits by the cost model's error is not returned;
* its integer model (the simulator, which the firmware matches bit for bit) is run on the
  whole test set: the accuracy of the firmware.

The best model is the checked one with the highest validation accuracy; its board build
is copied to ``<out>/best`` and the stand-in build to ``<out>/best-<qemu board>``.

Files: ``report.md`` and ``report.html`` (tables and the plot), ``pareto.svg`` (accuracy
against latency and against RAM), ``trials.csv`` / ``trials.json`` (every trial),
``summary.json`` (what this module returns).
"""
from __future__ import annotations

import csv
import filecmp
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import EdgekitError
from . import bars
from .config import CONSTRAINT_NAMES, NasConfig, board_of, fmt_bytes
from .rendering import pareto_svg, report_html, report_markdown, summary_text
from .storage import redact
from .trials import failure_reason, nearest_infeasible, pareto_front, trial_rows


# ---------------------------------------------------------------------------------------
# Checking a returned model
# ---------------------------------------------------------------------------------------
def _materialize(row: dict, config: NasConfig, data, work: Path, say) -> tuple[Path, str]:
    """The trained model of a trial: its ONNX file when this machine wrote it, else the
    architecture retrained here with the trial's settings and seed."""
    art = row.get("artifact") or {}
    onnx = Path(art.get("dir", "")) / "model.onnx"
    if art.get("host") == socket.gethostname() and onnx.is_file():
        return onnx, "trained during the search"
    say(f"  trial {row['number']}: trained on {art.get('host', '?')}; retraining it here")
    return _train_arch(row["arch_json"], config, data, work, config.max_epochs, config.seed + row["number"],
                       train_full=False), "retrained on this machine (the search trained it elsewhere)"


def _train_arch(arch_json: dict, config: NasConfig, data, work: Path, epochs: int, seed: int,
                train_full: bool) -> Path:
    import torch

    from ..qat import export_qonnx
    from .space import ArchSpec, build_model
    from .train import calibrate_activations, train_early_stopping

    arch = ArchSpec.from_json(arch_json)
    torch.manual_seed(seed)
    model = build_model(arch)
    idx = np.random.default_rng(config.seed).permutation(len(data.x_train))[:256]
    calibrate_activations(model, torch.as_tensor(data.x_train[idx]))
    x, y = data.x_train, data.y_train
    if train_full and config.train_subset:
        from .datasets import load

        full = load(config.dataset, None, config.seed)
        x, y = full.x_train, full.y_train
    with bars.bar(epochs, "final training" if train_full else "retraining", unit="epoch") as shown:
        def on_epoch(epoch, hist):
            shown.set_postfix_str(f"val {hist[2]:.3f}", refresh=False)
            shown.update()

        train_early_stopping(model, x, y, data.x_val, data.y_val, max_epochs=epochs,
                             patience=max(config.patience, 3 if train_full else config.patience), lr=config.lr,
                             batch=config.batch, seed=seed, on_epoch=on_epoch)
    work.mkdir(parents=True, exist_ok=True)
    return export_qonnx(model, torch.as_tensor(data.x_train[:1]), work / "model.onnx")


def integer_accuracy(build_dir: Path, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    """Top-1 accuracy of the integer model (edgekit's simulator, bit-exact with the firmware)."""
    from ..ir.graph import Graph
    from ..sim import quantize_input, simulate

    g = Graph.load(Path(build_dir))
    correct = 0
    for i in range(0, len(x), batch):
        codes = quantize_input(g, x[i:i + batch])
        out = simulate(g, codes)[g.outputs[0]].reshape(len(codes), -1)
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def check_model(onnx: Path, config: NasConfig, data, dest: Path) -> dict:
    """Build for the board and the stand-in, verify, profile, score; see the module docstring."""
    from ..api import build, verify
    from ..backends.cortexm.profile import profile
    from .cost import emulated_board_for

    board = board_of(config)
    res: dict = {"ok": False, "problems": []}
    model_bytes = Path(onnx).read_bytes()  # it may live inside dest (a retrained model)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "model.onnx").write_bytes(model_bytes)
    try:
        b = build(dest / "model.onnx", config.target, config.board, dest / "board")
    except EdgekitError as e:
        res["problems"].append(f"does not build for {board.name}: {str(e).splitlines()[0]}")
        return res
    m = b.manifest
    res.update(board_dir=str(dest / "board"), ram_bytes=m.memory["ram_bytes"],
               flash_bytes=m.memory["flash_bytes"], arena_bytes=m.arena_bytes, macs=m.macs,
               fits_board=m.fit["fits"], ram=m.memory_breakdown["ram"], flash=m.memory_breakdown["flash"])
    if board.emulated:
        emu_dir, emu_name = dest / "board", board.name
    else:
        emu_name = emulated_board_for(config.target)
        try:
            build(dest / "model.onnx", config.target, emu_name, dest / "emulated")
        except EdgekitError as e:
            res["problems"].append(f"does not build for the stand-in {emu_name}: {str(e).splitlines()[0]}")
            return res
        emu_dir = dest / "emulated"
        if not filecmp.cmp(emu_dir / "src" / "model.c", dest / "board" / "src" / "model.c", shallow=False):
            res["problems"].append(f"the C generated for {emu_name} differs from the {board.name} build")
    res.update(emulated_board=emu_name, emulated_dir=str(emu_dir))
    n = min(256, len(data.x_test))
    v_real = verify(emu_dir, inputs=data.x_test[:n])
    v_gen = verify(emu_dir, count=64)
    res["verify"] = {"test_windows": n, "real_ok": v_real.ok, "generated_ok": v_gen.ok,
                     "stages": [{"stage": s.stage, "mismatches": s.mismatches, "elements": s.elements,
                                 "must_be_exact": s.must_be_exact} for s in v_real.stages + v_gen.stages],
                     "stack_used_bytes": v_real.memory.get("stack_used_bytes")}
    (dest / "verify.txt").write_text(v_real.table() + "\n\n" + v_gen.table() + "\n")
    if not (v_real.ok and v_gen.ok):
        res["problems"].append(f"not bit-exact on {emu_name} (see {dest / 'verify.txt'})")
    try:
        p = profile(dest / "board", count=2).to_json()
        res.update(measured_instructions=p["total"]["instructions"], measured_cycles=p["total"]["est_cycles"],
                   measured_latency_ms=p["total"]["est_ms"], counted_on=p["counted_on"])
    except EdgekitError as e:
        res["problems"].append(f"could not be profiled: {str(e).splitlines()[0]}")
        return res
    res["int_test_accuracy"] = integer_accuracy(dest / "board", data.x_test, data.y_test)
    cons = config.budget.violations(res["ram_bytes"], res["flash_bytes"], res["measured_latency_ms"])
    res["constraints"] = cons
    for name, c in zip(CONSTRAINT_NAMES, cons):
        if c > 0:
            res["problems"].append(f"over the {name} budget by {100 * c:.1f}% (measured)")
    if not res["fits_board"]:
        res["problems"].append(f"does not fit {board.name}")
    res["ok"] = not res["problems"]
    return res


# ---------------------------------------------------------------------------------------
# finish(): checks, export, report
# ---------------------------------------------------------------------------------------
def finish(study, config: NasConfig, data, out_dir: Path, storage: str = "", study_name: str = "",
           verify_top: int = 8, final_epochs: int = 0, export: bool = True, say=print) -> dict:
    out_dir = Path(out_dir)
    rows = trial_rows(study)
    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    front = pareto_front(done)
    chance = data.chance()
    checked = []
    best = None
    if export and front:
        pareto_dir = out_dir / "pareto"
        for r in front[:verify_top]:
            if r["val_accuracy"] < chance["threshold"]:
                # Not evidence of learning: not worth building, and never returned.
                checked.append({"ok": False, "below_chance": True, "number": r["number"], "arch": r["arch"],
                                "val_accuracy": r["val_accuracy"], "test_accuracy": r["test_accuracy"],
                                "pred_latency_ms": r["latency_ms"], "pred_instructions": r["pred_instructions"],
                                "problems": [f"validation accuracy {r['val_accuracy']:.3f} is below "
                                             f"{chance['threshold']:.3f} (chance {chance['val']:.3f} + margin "
                                             f"{chance['margin']:.3f})"]})
                continue
            say(f"  checking trial {r['number']} ({r['arch']}): build for {config.board}, verify on the "
                f"stand-in, profile")
            work = pareto_dir / f"trial-{r['number']:04d}"
            origin = ""
            try:
                onnx, origin = _materialize(r, config, data, work / "retrain", say)
                chk = check_model(onnx, config, data, work)
            except Exception as e:  # noqa: BLE001  a model that cannot be checked is not returned
                chk = {"ok": False, "problems": [failure_reason(e)]}
            chk.update(number=r["number"], arch=r["arch"], val_accuracy=r["val_accuracy"],
                       test_accuracy=r["test_accuracy"], pred_latency_ms=r["latency_ms"],
                       pred_instructions=r["pred_instructions"], model_origin=origin,
                       dir=str(work))
            if chk.get("measured_instructions") and r["pred_instructions"]:
                chk["cost_model_error"] = (r["pred_instructions"] - chk["measured_instructions"]) / \
                    chk["measured_instructions"]
            checked.append(chk)
            say("    " + ("ok" if chk["ok"] else "REJECTED: " + "; ".join(chk["problems"]))
                + (f"; measured {chk['measured_latency_ms']:.2f} ms (predicted {r['latency_ms']:.2f}), firmware "
                   f"test accuracy {chk['int_test_accuracy']:.4f}" if chk.get("int_test_accuracy") is not None
                   else ""))
            if chk["ok"] and best is None:
                best = chk
        if best is not None and final_epochs > 0:
            say(f"  final training of trial {best['number']} for up to {final_epochs} epochs on the full "
                "training set")
            r = next(x for x in front if x["number"] == best["number"])
            work = out_dir / "pareto" / f"trial-{best['number']:04d}-final"
            try:
                onnx = _train_arch(r["arch_json"], config, data, work / "retrain", final_epochs,
                                   config.seed + r["number"], train_full=True)
                chk = check_model(onnx, config, data, work)
            except Exception as e:  # noqa: BLE001
                chk = {"ok": False, "problems": [failure_reason(e)]}
            chk.update(number=best["number"], arch=best["arch"], val_accuracy=None, test_accuracy=None,
                       pred_latency_ms=best["pred_latency_ms"], pred_instructions=best["pred_instructions"],
                       model_origin=f"retrained for up to {final_epochs} epochs on the full training set",
                       dir=str(work), final=True)
            checked.append(chk)
            say("    " + ("ok" if chk["ok"] else "REJECTED: " + "; ".join(chk["problems"]))
                + (f"; firmware test accuracy {chk['int_test_accuracy']:.4f}" if chk.get("int_test_accuracy")
                   is not None else ""))
            if chk["ok"] and chk["int_test_accuracy"] >= best["int_test_accuracy"]:
                best = chk
        if best is not None:
            for name, src in (("best", best["board_dir"]),
                              (f"best-{best['emulated_board']}", best["emulated_dir"])):
                if src == best["board_dir"] and name != "best":
                    continue
                dst = out_dir / name
                if dst.exists():
                    shutil.rmtree(dst)
                shutil.copytree(src, dst, symlinks=True)
            best["export_dir"] = str(out_dir / "best")

    board = board_of(config)
    cm = config.cost_model.get("stats", {})
    summary = {
        "edgekit_nas": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "study": study_name, "storage": redact(storage),
        "board": board.name, "target": config.target, "clock_hz": board.clock_hz,
        "budget": {"max_ram": config.budget.max_ram, "max_flash": config.budget.max_flash,
                   "max_latency_ms": config.budget.max_latency_ms},
        "dataset": config.dataset, "dataset_description": data.description,
        "trials": {"total": len(rows), "finished": len(done),
                   "trained": sum(r["trained"] for r in done),
                   "feasible": sum(r["feasible"] for r in done),
                   "infeasible_untrained": sum(r["status"] == "infeasible" and not r["trained"] for r in done),
                   "invalid_or_failed": sum(r["status"] in ("invalid", "build_failed") for r in done)},
        "cost_model": {"core": config.target, "n_fit": cm.get("n_fit"), "board": cm.get("board"),
                       "holdout": {k: v for k, v in (cm.get("holdout") or {}).items() if k != "rows"},
                       "holdout_near_budget": _holdout_near(cm.get("holdout"), config, board.clock_hz)},
        "pareto": [_public(r) for r in front],
        "checked": checked,
        "best": best,
        "feasible": best is not None,
        "nearest": [] if front else [_public(r) for r in nearest_infeasible(done)],
        "chance": chance,
        "below_chance": bool(export and front and best is None and all(c.get("below_chance") for c in checked)),
        "most_accurate": [_public(r) for r in most_accurate(done)],
        "training": {"max_epochs": config.max_epochs, "patience": config.patience, "batch": config.batch,
                     "train_subset": config.train_subset, "final_epochs": final_epochs},
    }
    _write_tables(out_dir, rows)
    (out_dir / "pareto.svg").write_text(pareto_svg(done, front, config, chance=chance))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    (out_dir / "report.md").write_text(report_markdown(summary, rows, front, config))
    (out_dir / "report.html").write_text(report_html(summary, rows, front, config))
    say(summary_text(summary, out_dir))
    say(chance_text(summary))
    return summary


def most_accurate(rows: list[dict], k: int = 5) -> list[dict]:
    """The trained trials with the best validation accuracy (whatever their budgets)."""
    trained = [r for r in rows if r["trained"] and r["val_accuracy"] is not None]
    return sorted(trained, key=lambda r: (-r["val_accuracy"], r["latency_ms"] or 0.0))[:k]


def chance_text(s: dict) -> str:
    """The data set's chance level against the result; when no model beat it, why the search
    returns nothing, and the trials that came nearest."""
    c = s["chance"]
    head = (f"chance (majority class): {c['val']:.3f} of the {c['n_val']} validation samples, {c['test']:.3f} of "
            f"the test samples")
    b = s["best"]
    if b is not None:
        return (head + f"; the returned model: validation {b['val_accuracy']:.3f} (needed >= {c['threshold']:.3f}),"
                f" firmware test accuracy {b['int_test_accuracy']:.3f}" if b.get("val_accuracy") is not None else
                head + f"; the returned model: firmware test accuracy {b['int_test_accuracy']:.3f}")
    if not s["below_chance"]:
        return head
    lines = [f"NOT BETTER THAN CHANCE: no feasible trained model reached validation accuracy {c['threshold']:.3f} "
             f"(chance {c['val']:.3f} + margin {c['margin']:.3f} = max(5 points, 3 standard errors on "
             f"{c['n_val']} validation samples)); nothing was exported."]
    if c["threshold"] > 1:
        lines.append(f"  the validation set ({c['n_val']} samples) is too small for any accuracy to clear the "
                     f"margin; use a data set with more validation samples")
    lines.append("  most accurate trials:")
    for r in s["most_accurate"]:
        over = [f"{n} +{100 * v:.0f}%" for n, v in zip(CONSTRAINT_NAMES, r["constraints"] or []) if v > 0]
        lat = f"{r['latency_ms']:.2f} ms" if r["latency_ms"] is not None else "-"
        lines.append(f"    #{r['number']} val {r['val_accuracy']:.3f} test {_acc(r['test_accuracy'])}  "
                     f"RAM {fmt_bytes(r['ram_bytes'])}, flash {fmt_bytes(r['flash_bytes'])}, latency {lat}"
                     f" ({'over: ' + ', '.join(over) if over else 'within budgets'})  {r['arch']}")
    t = s["training"]
    lines.append(f"  trained with batch {t['batch']}, at most {t['max_epochs']} epochs, patience {t['patience']}: try "
                 f"more epochs (--epochs), a smaller batch (--batch), more trials, or looser budgets")
    return "\n".join(lines)


def _acc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _holdout_near(holdout: dict | None, config: NasConfig, clock_hz: int) -> dict | None:
    """Held-out error over the architectures whose measured latency is at most twice the
    budget (where the model's answer decides feasibility)."""
    lim = config.budget.max_latency_ms
    if not holdout or not lim or not holdout.get("rows"):
        return None
    rows = [r for r in holdout["rows"] if r["measured_cycles"] / clock_hz * 1e3 <= 2 * lim]
    if not rows:
        return None
    ei = [abs(r["instructions_error"]) for r in rows]
    ec = [abs(r["cycles_error"]) for r in rows]
    return {"n": len(rows), "of": len(holdout["rows"]), "within_ms": 2 * lim,
            "instructions_mean_abs": float(np.mean(ei)), "instructions_max_abs": float(np.max(ei)),
            "cycles_mean_abs": float(np.mean(ec)), "cycles_max_abs": float(np.max(ec)),
            "share_within_5pct": float(np.mean([e <= 0.05 for e in ei]))}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _public(r: dict) -> dict:
    keys = ("number", "status", "reason", "arch", "val_accuracy", "test_accuracy", "latency_ms",
            "pred_instructions", "ram_bytes", "flash_bytes", "arena_bytes", "macs", "constraints", "epochs",
            "seconds")
    return {k: r.get(k) for k in keys}


def _write_tables(out_dir: Path, rows: list[dict]) -> None:
    cols = ("number", "state", "status", "val_accuracy", "test_accuracy", "latency_ms", "pred_instructions",
            "ram_bytes", "flash_bytes", "arena_bytes", "macs", "feasible", "trained", "epochs", "seconds",
            "worker", "arch", "reason")
    with open(out_dir / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else (f"{r[c]:.5g}" if isinstance(r[c], float) else r[c])
                        for c in cols])
    (out_dir / "trials.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "stage"} for r in rows],
                                                    indent=1, default=_json_default))
