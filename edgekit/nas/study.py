"""The optuna study: set-up, workers, and the whole search (what ``edgekit nas`` runs).

Objectives and constraints are those of :mod:`.objective`; the constraints are given to
optuna's TPE sampler as ``constraints_func`` (or ``Trial.set_constraint`` on optuna >= 5).

The study lives in an optuna RDB storage (:mod:`.storage`): SQLite in the output directory
by default (resumable: run the same command again), or any SQLAlchemy URL, e.g.
PostgreSQL, so workers on several machines share one study (``edgekit nas-worker``). The
search's settings (board, budgets, data, space, training, cost model) are stored in the
study, so a worker needs only the storage URL and the study name. After the trials,
:mod:`.finalize` checks the Pareto models, exports the best and writes the report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EdgekitError
from . import bars
from .config import NasConfig, board_of, fmt_bytes, resolve_training
from .finalize import finish
from .objective import Objective
from .storage import default_storage, has_set_constraint, load_optuna, make_storage, redact
from .trials import trial_rows, trial_rows_one

CONFIG_ATTR = "edgekit_nas"
DIRECTIONS = ("maximize", "minimize", "minimize")
METRIC_NAMES = ("val_accuracy", "latency_ms", "ram_bytes")  # what optuna-dashboard labels the objectives
DEFAULT_STUDY = "edgekit-nas"


# ---------------------------------------------------------------------------------------
# Study
# ---------------------------------------------------------------------------------------
def constraints_func(trial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [1.0, 1.0, 1.0]))


def make_sampler(config: NasConfig, worker_index: int, n_trials: int | None = None):
    optuna = load_optuna()
    startup = 10 if n_trials is None else max(4, min(10, n_trials // 3))
    kw = {} if has_set_constraint() else {"constraints_func": constraints_func}
    return optuna.samplers.TPESampler(seed=config.seed * 1000 + worker_index, n_startup_trials=startup,
                                      multivariate=True, group=True, constant_liar=True, **kw)


def open_study(storage: str, study_name: str, config: NasConfig | None = None, worker_index: int = 0,
               n_trials: int | None = None):
    """Create or resume a study (``config`` given) or join one (``config`` None: read
    from the study). Returns (study, config)."""
    optuna = load_optuna()
    st = make_storage(storage)
    if config is None:
        try:
            study = optuna.load_study(study_name=study_name, storage=st)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(st)]
            raise EdgekitError(f"no study '{study_name}' in {redact(storage)}; studies there: "
                               f"{', '.join(names) or 'none'}") from None
        if CONFIG_ATTR not in study.user_attrs:
            raise EdgekitError(f"study '{study_name}' was not created by edgekit nas")
        config = NasConfig.from_json(study.user_attrs[CONFIG_ATTR])
        study.sampler = make_sampler(config, worker_index, n_trials)
        return study, config
    study = optuna.create_study(storage=st, study_name=study_name, directions=list(DIRECTIONS),
                                sampler=make_sampler(config, worker_index, n_trials), load_if_exists=True)
    _name_metrics(study)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, config.to_json())
        return study, config
    old = NasConfig.from_json(stored)
    if old.identity() != config.identity():
        a, b = old.identity(), config.identity()
        diff = [f"{k}: stored {a[k]!r}, now {b[k]!r}" for k in a if a[k] != b.get(k)]
        raise EdgekitError(f"study '{study_name}' in {redact(storage)} was made with other settings ("
                           + "; ".join(diff) + "); use another --study name or output directory to start afresh")
    return study, old


def _name_metrics(study) -> None:
    """Store the objectives' names in the study (optuna-dashboard shows them instead of
    "Objective 0-2"); studies made before this get them when resumed."""
    if list(getattr(study, "metric_names", None) or []) == list(METRIC_NAMES):
        return
    import warnings

    with warnings.catch_warnings():  # experimental in some optuna versions; says nothing to the user
        warnings.simplefilter("ignore")
        study.set_metric_names(list(METRIC_NAMES))


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------
def _counted_states():
    optuna = load_optuna()
    s = optuna.trial.TrialState
    return (s.COMPLETE, s.PRUNED, s.RUNNING, s.WAITING)


def run_worker(storage: str, study_name: str, out_dir: str | Path, n_trials: int | None = None,
               worker_index: int = 0, timeout: float | None = None, threads: int | None = None,
               on_trial=None, on_event=None) -> int:
    """Run trials of a shared study until it has ``n_trials`` (default: the study's own
    setting) or ``timeout`` seconds passed. Returns the number of trials this worker ran."""
    import torch

    from .cost import CostModel
    from .datasets import load

    optuna = load_optuna()
    study, config = open_study(storage, study_name, None, worker_index)
    n_trials = n_trials or study.user_attrs.get("n_trials")
    if threads:
        torch.set_num_threads(threads)
    if not config.cost_model:
        raise EdgekitError(f"study '{study_name}' has no cost model stored; start it with `edgekit nas`")
    cost = CostModel.from_json(config.cost_model)
    if config.target != cost.core:
        raise EdgekitError(f"the study's cost model is for {cost.core}, not {config.target}")
    data = load(config.dataset, config.train_subset, config.seed)
    resolve_training(config, len(data.x_train))  # a study stored with them unset: the same values everywhere
    study.sampler = make_sampler(config, worker_index, n_trials)
    objective = Objective(config, data, cost, Path(out_dir), n_trials, on_event)
    states = _counted_states()
    if n_trials is not None and len(study.get_trials(deepcopy=False, states=states)) >= n_trials:
        return 0
    callbacks = []
    if n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=states))
    if on_trial is not None:
        callbacks.append(lambda s, t: on_trial(t))
    ran = [0]
    callbacks.append(lambda s, t: ran.__setitem__(0, ran[0] + 1))
    study.optimize(objective, timeout=timeout, callbacks=callbacks, gc_after_trial=True)
    return ran[0]


# ---------------------------------------------------------------------------------------
# The whole search (what `edgekit nas` runs)
# ---------------------------------------------------------------------------------------
class Progress:
    """Live progress: one line per finished trial; on a terminal, bars (stderr) for the
    trials, with what the running ones are doing, and for the running trial's epochs."""

    def __init__(self, n_trials: int, stream=None, t0: float | None = None):
        self.n = n_trials
        self.stream = stream or sys.stdout
        self.t0 = t0 or time.monotonic()
        self.seen: set[int] = set()
        self.best: float | None = None
        self.feasible = 0
        self.done = 0
        self._trials = None                      # the trial bar, from start() to close()
        self._epochs = None                      # (trial number, its epoch bar)
        self._earlier: set[int] = set()

    def start(self, earlier: set[int] = frozenset()) -> None:
        """Open the bars; ``earlier``: trials already in the study (a resumed one) count as done."""
        self._earlier = set(earlier)
        self._trials = bars.bar(self.n, "trials", unit="trial")
        self._trials.update(len(self._earlier))

    def close(self) -> None:
        self._close_epochs()
        if self._trials is not None:
            self._trials.close()
            self._trials = None

    def _close_epochs(self) -> None:
        if self._epochs is not None:
            self._epochs[1].close()
            self._epochs = None

    def trial(self, row: dict) -> None:
        if row["number"] in self.seen:
            return
        self.seen.add(row["number"])
        self.done += 1
        if row["feasible"]:
            self.feasible += 1
            self.best = max(self.best or 0.0, row["val_accuracy"])
        if self._epochs is not None and self._epochs[0] == row["number"]:
            self._close_epochs()
        acc = f"{row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "  -  "
        lat = f"{row['latency_ms']:7.2f} ms" if row["latency_ms"] is not None else "       -  "
        status = row["status"] + (f" ({row['reason']})" if row["reason"] and row["status"] != "feasible" else "")
        bars.write(
            f"[{self.done:>3}/{self.n}] #{row['number']:<4} val {acc}  {lat}  RAM {fmt_bytes(row['ram_bytes']):>10}  "
            f"flash {fmt_bytes(row['flash_bytes']):>10}  {row['arch'][:70]:<70}  {status[:60]}  "
            f"{row['seconds'] or 0:.0f} s | feasible {self.feasible}, best "
            f"{'-' if self.best is None else f'{self.best:.3f}'}  [{self._elapsed()}]", self.stream)
        if self._trials is not None and row["number"] not in self._earlier:
            self._trials.update(1)

    def status(self, running: list[dict]) -> None:
        """What the running trials are doing (the trial bar's postfix)."""
        if self._trials is None:
            return
        parts = [f"#{r['number']}: {r['stage'] or 'starting'}" for r in running][:4]
        self._trials.set_postfix_str(("best " + (f"{self.best:.3f}" if self.best is not None else "-") + "; "
                                      + "; ".join(parts))[:120])

    def epoch(self, number: int, epoch: int, total: int, val: float) -> None:
        """Epoch ``epoch`` of ``total`` of trial ``number`` finished with validation accuracy ``val``."""
        if self._trials is None:
            return
        if self._epochs is None or self._epochs[0] != number:
            self._close_epochs()
            self._epochs = (number, bars.bar(total, f"#{number} epochs", unit="epoch", position=1))
        shown = self._epochs[1]
        shown.set_postfix_str(f"val {val:.3f}", refresh=False)
        shown.update(epoch - shown.n)

    def message(self, text: str) -> None:
        bars.write(text, self.stream)

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"


def run_search(config: NasConfig, out_dir: str | Path, n_trials: int, storage: str | None = None,
               study_name: str = DEFAULT_STUDY, workers: int = 1, timeout: float | None = None,
               calibration: int = 40, cost_model_path: str | None = None, verify_top: int = 8,
               final_epochs: int = 0, export: bool = True, stream=None, recalibrate: bool = False) -> dict:
    """Run (or resume) a search and write the report; returns the summary (summary.json)."""
    from .cost import load_or_calibrate
    from .datasets import load

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    progress = Progress(n_trials, stream)
    say = progress.message
    data = load(config.dataset, config.train_subset, config.seed)
    say(f"edgekit nas: {config.dataset} ({data.description})")
    filled = resolve_training(config, len(data.x_train))
    say(f"  training: batch {config.batch}, at most {config.max_epochs} epochs, patience {config.patience}"
        + (f" ({', '.join(filled)} from the training set's {len(data.x_train)} samples)" if filled else ""))
    say(f"  board {config.board} ({config.target}, {board_of(config).clock_hz / 1e6:g} MHz), budgets: "
        f"{config.budget.describe()}; {n_trials} trials, {workers} worker(s); study '{study_name}' in "
        f"{redact(storage)}")

    optuna = load_optuna()
    # Resume: keep the stored settings (and the cost model they were searched with).
    st = make_storage(storage)
    existing = None
    try:
        existing = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        pass
    if existing is not None and CONFIG_ATTR in existing.user_attrs:
        stored = NasConfig.from_json(existing.user_attrs[CONFIG_ATTR])
        config.cost_model = stored.cost_model
        say(f"  resuming: {len(existing.trials)} trials already in the study")
    else:
        from .space import SpaceConfig

        # Calibrate where the search can succeed: a model with more MACs than twice the budget's
        # cycles is over budget whatever the model says (SMLAD does at most 2 MACs a cycle).
        lim = config.budget.max_latency_ms
        max_macs = int(2 * lim * 1e-3 * board_of(config).clock_hz) if lim else None
        cost = load_or_calibrate(config.target, data.input_shape, data.n_classes, n_fit=calibration,
                                 n_holdout=max(4, calibration // 3), workers=os.cpu_count() or 1,
                                 progress=say, path=cost_model_path,
                                 space=SpaceConfig.from_json(config.space) if config.space else SpaceConfig(),
                                 max_macs=max_macs, recalibrate=recalibrate)
        cm = cost.to_json()
        cm["stats"] = {k: v for k, v in cm["stats"].items() if k != "samples"}
        if cm["stats"].get("holdout"):
            cm["stats"]["holdout"] = {k: v for k, v in cm["stats"]["holdout"].items()}
        config.cost_model = cm
        say("  " + cost.summary())
    study, config = open_study(storage, study_name, config, 0, n_trials)
    study.set_user_attr("n_trials", n_trials)
    (out_dir / "cost_model.json").write_text(json.dumps(config.cost_model, indent=1))

    t0 = time.monotonic()
    progress.start({r["number"] for r in trial_rows(study)})
    try:
        if workers <= 1:
            def on_trial(t):
                for r in trial_rows_one(t):
                    progress.trial(r)

            def on_event(kind, number, detail):
                if kind == "epoch":
                    progress.epoch(number, *detail)
                else:
                    progress.status([{"number": number, "stage": detail}])

            run_worker(storage, study_name, out_dir, n_trials, 0, timeout, None, on_trial, on_event)
        else:
            _run_local_workers(storage, study_name, out_dir, n_trials, workers, timeout, progress)
    except KeyboardInterrupt:
        progress.close()
        progress.message("interrupted: the study is saved; run the same command again to resume")
        raise
    progress.close()
    for r in trial_rows(study):  # trials that finished but were not shown (other workers)
        if r["state"] in ("COMPLETE", "PRUNED"):
            progress.trial(r)
    progress.message(f"search done in {time.monotonic() - t0:.0f} s; writing the report"
                     + (" and exporting the best model" if export else ""))
    return finish(study, config, data, out_dir, storage=storage, study_name=study_name, verify_top=verify_top,
                  final_epochs=final_epochs, export=export, say=say)


def _run_local_workers(storage, study_name, out_dir: Path, n_trials, workers, timeout, progress) -> None:
    """Start ``workers`` `edgekit nas-worker` processes on this machine and show their progress."""
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "edgekit", "nas-worker", "--storage", storage, "--study", study_name,
               "-o", str(out_dir), "--trials", str(n_trials), "--worker-index", str(i + 1),
               "--threads", str(threads), "--quiet"]
        if timeout:
            cmd += ["--timeout", str(timeout)]
        log = open(logs / f"worker-{i + 1}.log", "a")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    optuna = load_optuna()
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    try:
        while True:
            alive = [p for p, _ in procs if p.poll() is None]
            rows = trial_rows(study)
            for r in rows:
                if r["state"] in ("COMPLETE", "PRUNED"):
                    progress.trial(r)
            progress.status([r for r in rows if r["state"] == "RUNNING"])
            if not alive:
                break
            time.sleep(2.0)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        for _, log in procs:
            log.close()
    bad = [(i + 1, p.returncode) for i, (p, _) in enumerate(procs) if p.returncode != 0]
    if bad:
        tails = []
        for i, rc in bad:
            text = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()
            tails.append(f"worker {i} exited {rc}: " + (text[-1] if text else "no output"))
        progress.message("warning: " + "; ".join(tails) + f" (logs in {logs})")
