"""The optuna objective: one trial of the search.

A trial draws an architecture from the search space (:mod:`.space`) and:

1. exports it with calibrated random weights and **builds it for the board** with
   ``edgekit.api.build``: RAM (the firmware's whole RAM as linked: ``.data`` + ``.bss``,
   which holds the planner's arena and the input/output buffers, + the board's reserved
   stack) and flash (code + weights + runtime) come from the build's ``manifest.json``,
   so they are exact; latency comes from the calibrated per-core cost model
   (:mod:`.cost`) at the board's clock;
2. if a budget is exceeded, stops there (the trial is recorded as infeasible, with its
   constraint violations, and not trained);
3. otherwise trains it briefly with QAT and early stopping on the training subjects,
   scores it on the validation subjects, exports the trained model and builds it again
   (the recorded memory figures are those of the trained model).

With ``--bits hawq`` (config ``weight_bits``) the budgets are checked against the cheapest
weight widths before training, and after training at 8 bits the trial picks its widths by
Hessian-aware allocation and fine-tunes (:mod:`.hawq`).

Objectives: validation accuracy (maximise), latency in ms and RAM in bytes (minimise);
constraints: RAM, flash and latency budgets (a value <= 0 is satisfied).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import EdgekitError
from .config import CONSTRAINT_NAMES, NasConfig, board_of
from .storage import has_set_constraint, load_optuna
from .trials import failure_reason


def measure_build(onnx: Path, config: NasConfig, cost, work: Path) -> dict:
    """Build ``onnx`` for the board; exact memory from the manifest, latency from the cost model."""
    from ..api import build

    res = build(onnx, config.target, config.board, work)
    m = res.manifest
    pred = cost.predict_build(work)
    clock = board_of(config).clock_hz
    bd = m.memory_breakdown
    out = {"ram_bytes": m.memory["ram_bytes"], "flash_bytes": m.memory["flash_bytes"],
           "arena_bytes": m.arena_bytes, "macs": m.macs, "weight_bytes": m.weight_bytes,
           "ram": bd.get("ram"), "flash": bd.get("flash"),
           "pred_instructions": round(pred["instructions"]), "pred_cycles": round(pred["cycles"]),
           "pred_latency_ms": pred["cycles"] / clock * 1e3, "latency_ms": pred["cycles"] / clock * 1e3,
           "latency_source": "model"}
    limit = config.budget.max_latency_ms
    if limit and config.measure_band and abs(out["latency_ms"] / limit - 1) <= config.measure_band:
        # Too close to the budget for the model's error to decide: count on the emulator.
        from ..backends.cortexm.profile import profile

        try:
            p = profile(work, count=1, write=False).to_json()["total"]
            out.update(latency_ms=p["est_ms"], latency_source="measured", measured_instructions=p["instructions"])
        except EdgekitError:
            pass  # no QEMU plugin on this machine: the model decides
    return out


class Objective:
    """The optuna objective of one worker: holds the data, the cost model and the settings."""

    def __init__(self, config: NasConfig, data, cost, out_dir: Path, n_trials: int | None = None,
                 on_event=None):
        import torch

        from .space import SpaceConfig

        self.config, self.data, self.cost = config, data, cost
        self.space = SpaceConfig.from_json(config.space) if config.space else SpaceConfig()
        self.out_dir = Path(out_dir)
        self.n_trials = n_trials
        self.on_event = on_event or (lambda *a: None)
        self.host = socket.gethostname()
        rng = np.random.default_rng(config.seed)
        idx = rng.permutation(len(data.x_train))[:256]
        self.x_cal = torch.as_tensor(data.x_train[idx])
        self.y_cal = torch.as_tensor(data.y_train[idx])  # the Hessian traces' calibration set (--bits hawq)

    def __call__(self, trial):
        import torch

        from ..qat import evaluate, export_qonnx
        from .space import build_model, sample
        from .train import calibrate_activations, train_early_stopping

        optuna = load_optuna()
        cfg, data = self.config, self.data
        t0 = time.monotonic()
        arch = sample(trial, self.space, data.input_shape, data.n_classes)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("describe", arch.describe())
        trial.set_user_attr("worker", f"{self.host}:{os.getpid()}")
        why = arch.valid()
        if why:
            self._finish(trial, "invalid", t0, reason=why)
            raise optuna.TrialPruned(why)
        tdir = self.out_dir / "trials" / f"{trial.number:04d}"
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir(parents=True)
        (tdir / "arch.json").write_text(json.dumps(arch.to_json(), indent=1))
        self._stage(trial, "building")
        torch.manual_seed(cfg.seed + trial.number)
        model = build_model(arch)
        calibrate_activations(model, self.x_cal)
        try:
            onnx = export_qonnx(model, torch.as_tensor(data.x_train[:1]), tdir / "untrained.onnx")
            pre = measure_build(onnx, cfg, self.cost, tdir / "build")
        except Exception as e:  # noqa: BLE001  EdgekitError, or a bug: the search goes on, the trial says why
            why = failure_reason(e)
            self._finish(trial, "build_failed", t0, reason=why)
            shutil.rmtree(tdir, ignore_errors=True)
            raise optuna.TrialPruned(why) from None
        finally:
            (tdir / "untrained.onnx").unlink(missing_ok=True)
        hawq_costs = None
        if cfg.weight_bits == "hawq":
            # the budgets apply to the cheapest weight widths, not to the 8-bit draw
            try:
                hawq_costs, pre = self._hawq_costs(model, arch, pre, tdir)
            except Exception as e:  # noqa: BLE001  as for the build above
                why = failure_reason(e)
                self._finish(trial, "build_failed", t0, reason=why)
                shutil.rmtree(tdir, ignore_errors=True)
                raise optuna.TrialPruned(why) from None
        cons = cfg.budget.violations(pre["ram_bytes"], pre["flash_bytes"], pre["latency_ms"])
        trial.set_user_attr("metrics", pre)
        if max(cons) > 0:
            self._constrain(trial, cons)
            over = [n for n, c in zip(CONSTRAINT_NAMES, cons) if c > 0]
            self._finish(trial, "infeasible", t0, reason="over budget in " + ", ".join(over) + "; not trained")
            shutil.rmtree(tdir, ignore_errors=True)
            return 0.0, pre["latency_ms"], float(pre["ram_bytes"])

        self._stage(trial, "training")

        def on_epoch(epoch, hist):
            self._stage(trial, f"training epoch {epoch}/{cfg.max_epochs} (val {hist[2]:.3f})")
            self.on_event("epoch", trial.number, (epoch, cfg.max_epochs, hist[2]))

        res = train_early_stopping(model, data.x_train, data.y_train, data.x_val, data.y_val,
                                   max_epochs=cfg.max_epochs, patience=cfg.patience, lr=cfg.lr, batch=cfg.batch,
                                   seed=cfg.seed + trial.number, time_limit=cfg.trial_time_limit,
                                   on_epoch=on_epoch)
        if hawq_costs is not None:
            arch, res = self._hawq_allocate(trial, model, arch, hawq_costs, res, tdir)
        test_acc = evaluate(model, data.x_test, data.y_test)
        self._stage(trial, "building trained model")
        try:
            onnx = export_qonnx(model, torch.as_tensor(data.x_train[:1]), tdir / "model.onnx")
            post = measure_build(onnx, cfg, self.cost, tdir / "build")
        except Exception as e:  # noqa: BLE001  e.g. trained weights make an accumulator bound too large
            why = failure_reason(e)
            self._finish(trial, "build_failed", t0, reason="after training: " + why)
            raise optuna.TrialPruned(why) from None
        shutil.copy(tdir / "build" / "manifest.json", tdir / "manifest.json")
        shutil.rmtree(tdir / "build", ignore_errors=True)
        cons = cfg.budget.violations(post["ram_bytes"], post["flash_bytes"], post["latency_ms"])
        self._constrain(trial, cons)
        trial.set_user_attr("metrics", post)
        trial.set_user_attr("train", {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                                      "stopped": res.stopped, "seconds": round(res.seconds, 1),
                                      "history": [[round(v, 4) for v in h] for h in res.history]})
        trial.set_user_attr("test_accuracy", test_acc)
        trial.set_user_attr("artifact", {"host": self.host, "dir": str(tdir.resolve())})
        (tdir / "trial.json").write_text(json.dumps({"number": trial.number, "arch": arch.to_json(),
                                                     "metrics": post, "val_accuracy": res.best_val,
                                                     "test_accuracy": test_acc}, indent=1))
        status = "feasible" if max(cons) <= 0 else "infeasible"
        self._finish(trial, status, t0, reason="" if status == "feasible" else "over budget after training")
        return float(res.best_val), post["latency_ms"], float(post["ram_bytes"])

    def _hawq_costs(self, model, arch, pre: dict, tdir: Path):
        """--bits hawq: the groups' cost table, and ``pre`` with the cheapest assignment's
        flash and latency (what the budgets are checked against before training)."""
        import torch

        from ..qat.mixed_precision_alloc import InfeasibleBudget, allocate
        from .hawq import cost_table, ilp_budgets

        costs = cost_table(model, arch, torch.as_tensor(self.data.x_train[:1]), self.config, self.cost,
                           tdir / "hawq")
        clock = board_of(self.config).clock_hz
        cheapest = {r: costs.base[r] + float(costs.per_layer[r].min(axis=1).sum()) for r in ("flash", "cycles")}
        budgets = {k: v for k, v in ilp_budgets(self.config.budget, clock).items() if k != "ram"}
        try:  # a feasible trial has an assignment within the budgets together
            cheapest = allocate(np.zeros(costs.per_layer["flash"].shape), costs, budgets).predicted
        except InfeasibleBudget:
            pass
        shutil.rmtree(tdir / "hawq", ignore_errors=True)
        pre = {**pre, "flash_bytes": int(round(cheapest["flash"])), "latency_ms": cheapest["cycles"] / clock * 1e3,
               "latency_source": "model (cheapest weight widths)"}
        return costs, pre

    def _hawq_allocate(self, trial, model, arch, costs, res8, tdir: Path):
        """--bits hawq, after training at 8 bits: Hessian traces, the ILP, fine-tuning."""
        import torch

        from ..qat.mixed_precision_alloc import allocate
        from .hawq import apply_group_bits, group_sensitivity, ilp_budgets, with_bits
        from .train import train_early_stopping

        cfg, data = self.config, self.data
        self._stage(trial, "Hessian traces")
        omega, traces = group_sensitivity(model, arch, self.x_cal, self.y_cal, seed=cfg.seed + trial.number)
        budgets = {k: v for k, v in ilp_budgets(cfg.budget, board_of(cfg).clock_hz).items() if k != "ram"}
        alloc = allocate(omega, costs, budgets)
        bits = [alloc.bits[n] for n in costs.layers]
        apply_group_bits(model, arch, bits, torch.as_tensor(data.x_train[:1]))
        arch = with_bits(arch, bits)
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("describe", arch.describe())
        (tdir / "arch.json").write_text(json.dumps(arch.to_json(), indent=1))
        trial.set_user_attr("hawq", {"bits": alloc.bits, "sensitivity": alloc.sensitivity,
                                     "predicted": alloc.predicted, "val_accuracy_8bit": res8.best_val,
                                     "traces": [{"layer": t.name, "trace": t.trace_mean, "stderr": t.trace_stderr}
                                                for t in traces]})
        self._stage(trial, "fine-tuning " + " ".join(map(str, bits)))
        epochs = max(2, cfg.max_epochs // 3)
        res = train_early_stopping(model, data.x_train, data.y_train, data.x_val, data.y_val, max_epochs=epochs,
                                   patience=cfg.patience, lr=cfg.lr / 5, batch=cfg.batch,
                                   seed=cfg.seed + trial.number, time_limit=cfg.trial_time_limit)
        res.best_epoch += res8.epochs_run
        res.epochs_run += res8.epochs_run
        res.seconds += res8.seconds
        res.history = res8.history + res.history
        return arch, res

    @staticmethod
    def _constrain(trial, cons: list[float]) -> None:
        """Record the budget violations (<= 0: within budget) for the sampler and the report."""
        trial.set_user_attr("constraints", cons)
        if has_set_constraint():
            for name, c in zip(CONSTRAINT_NAMES, cons):
                trial.set_constraint(name, c)

    def _stage(self, trial, text: str) -> None:
        try:
            trial.set_user_attr("stage", text)
        except Exception:  # progress only: never fail a trial over it
            pass
        self.on_event("stage", trial.number, text)

    def _finish(self, trial, status: str, t0: float, reason: str = "") -> None:
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("seconds", round(time.monotonic() - t0, 1))
        trial.set_user_attr("stage", "done")
