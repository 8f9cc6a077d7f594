"""Constrained multi-objective architecture search with optuna.

One **trial** draws an architecture from the search space (:mod:`.space`) and:

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

Objectives: validation accuracy (maximise), latency in ms and RAM in bytes (minimise);
constraints: RAM, flash and latency budgets, given to optuna's TPE sampler as
``constraints_func`` (a value <= 0 is satisfied).

The study lives in an optuna RDB storage: SQLite in the output directory by default
(resumable: run the same command again), or any SQLAlchemy URL, e.g. PostgreSQL, so
workers on several machines share one study (``edgekit nas-worker``). The search's
settings (board, budgets, data, space, training, cost model) are stored in the study,
so a worker needs only the storage URL and the study name.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgekitError

CONFIG_ATTR = "edgekit_nas"
DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("val_accuracy", "latency_ms", "ram_bytes")
DEFAULT_STUDY = "edgekit-nas"


# ---------------------------------------------------------------------------------------
# Budgets and configuration
# ---------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.I)
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$", re.I)


def parse_size(text: str | int) -> int:
    """Bytes from '64KB', '64KiB', '256k', '1MB', '4096' (K/KB/KiB = 1024, M/MB/MiB = 1024^2)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise EdgekitError(f"cannot read a size from '{text}'; write e.g. 64KB, 256KiB, 1MB or 4096")
    unit = (m.group(2) or "b").lower()
    mult = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}[unit]
    return int(round(float(m.group(1)) * mult))


def parse_latency(text: str | float) -> float:
    """Milliseconds from '20ms', '0.02s', '500us', '20' (ms)."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _TIME.match(str(text))
    if not m:
        raise EdgekitError(f"cannot read a latency from '{text}'; write e.g. 20ms, 0.5s or 800us")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[(m.group(2) or "ms").lower()]


@dataclass(frozen=True)
class Budget:
    max_ram: int | None = None          # bytes
    max_flash: int | None = None        # bytes
    max_latency_ms: float | None = None

    def violations(self, ram: float, flash: float, latency_ms: float) -> list[float]:
        """Relative excess per budget (<= 0: satisfied), the order of ``constraints``."""
        def rel(v, limit):
            return -1.0 if limit is None else (float(v) - limit) / limit
        return [rel(ram, self.max_ram), rel(flash, self.max_flash), rel(latency_ms, self.max_latency_ms)]

    def describe(self) -> str:
        parts = []
        if self.max_ram is not None:
            parts.append(f"RAM <= {fmt_bytes(self.max_ram)}")
        if self.max_flash is not None:
            parts.append(f"flash <= {fmt_bytes(self.max_flash)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return ", ".join(parts) or "no budgets"


CONSTRAINT_NAMES = ("RAM", "flash", "latency")


@dataclass
class NasConfig:
    board: str
    target: str
    budget: Budget
    dataset: str = "har"
    train_subset: int | None = None
    space: dict = field(default_factory=dict)        # SpaceConfig.to_json()
    max_epochs: int = 6
    patience: int = 2
    lr: float = 5e-3
    batch: int = 64
    trial_time_limit: float | None = None            # seconds of training per trial
    seed: int = 0
    measure_band: float = 0.15                       # profile on QEMU when the prediction is this close to the budget
    cost_model: dict = field(default_factory=dict)   # CostModel.to_json() without the raw samples

    def to_json(self) -> dict:
        d = asdict(self)
        d["budget"] = asdict(self.budget)
        return d

    @staticmethod
    def from_json(d: dict) -> "NasConfig":
        d = dict(d)
        d["budget"] = Budget(**d["budget"])
        return NasConfig(**d)

    def identity(self) -> dict:
        """What must match to resume a study (the trial count and cost model may differ)."""
        d = self.to_json()
        d.pop("cost_model", None)
        return d


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{int(n)} B"


# ---------------------------------------------------------------------------------------
# Storage and study
# ---------------------------------------------------------------------------------------
def default_storage(out_dir: str | Path) -> str:
    return f"sqlite:///{(Path(out_dir).resolve() / 'study.db')}"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise EdgekitError("architecture search needs optuna: pip install 'edgekit[nas]'") from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_storage(url: str):
    """An optuna RDB storage with heartbeats: a worker that dies leaves a trial that the
    next worker marks failed and retries once."""
    optuna = _optuna()
    url = database_url(url)
    if url.startswith("sqlite"):
        kw = {"connect_args": {"timeout": 300}}
    else:
        kw = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat options are "experimental" in optuna
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kw, heartbeat_interval=20, grace_period=90,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    except ImportError as e:
        raise EdgekitError(f"storage {redact(url)}: missing database driver ({e}); for PostgreSQL: "
                           "pip install psycopg2-binary (in edgekit[nas])") from None
    except Exception as e:  # sqlalchemy OperationalError and friends
        raise EdgekitError(f"cannot open the study storage {redact(url)}: {str(e).splitlines()[0]}") from None


def database_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` with the psycopg2 driver (edgekit[nas] installs it;
    SQLAlchemy 2.1 would otherwise look for psycopg 3), unless a driver is named."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg  # noqa: F401  (psycopg 3 installed: SQLAlchemy's default works)
            except ImportError:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def constraints_func(trial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [1.0, 1.0, 1.0]))


def _set_constraint_api() -> bool:
    """optuna >= 5 takes constraints per trial (Trial.set_constraint); before, a sampler's
    constraints_func reads them back."""
    return hasattr(_optuna().trial.Trial, "set_constraint")


def make_sampler(config: NasConfig, worker_index: int, n_trials: int | None = None):
    optuna = _optuna()
    startup = 10 if n_trials is None else max(4, min(10, n_trials // 3))
    kw = {} if _set_constraint_api() else {"constraints_func": constraints_func}
    return optuna.samplers.TPESampler(seed=config.seed * 1000 + worker_index, n_startup_trials=startup,
                                      multivariate=True, group=True, constant_liar=True, **kw)


def open_study(storage: str, study_name: str, config: NasConfig | None = None, worker_index: int = 0,
               n_trials: int | None = None):
    """Create or resume a study (``config`` given) or join one (``config`` None: read
    from the study). Returns (study, config)."""
    optuna = _optuna()
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


# ---------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------
def board_of(config: NasConfig):
    from ..targets import get_board

    return get_board(config.board)


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


def _why(e: BaseException) -> str:
    """One line for a trial's or a check's failure; exceptions other than EdgekitError are
    bugs (in edgekit), named as such."""
    text = (str(e).strip().splitlines() or [""])[0][:400]
    return text if isinstance(e, EdgekitError) else f"internal error ({type(e).__name__}: {text})"


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

    def __call__(self, trial):
        import torch

        from ..qat import evaluate, export_qonnx
        from .space import build_model, sample
        from .train import calibrate_activations, train_early_stopping

        optuna = _optuna()
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
            why = _why(e)
            self._finish(trial, "build_failed", t0, reason=why)
            shutil.rmtree(tdir, ignore_errors=True)
            raise optuna.TrialPruned(why) from None
        finally:
            (tdir / "untrained.onnx").unlink(missing_ok=True)
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

        res = train_early_stopping(model, data.x_train, data.y_train, data.x_val, data.y_val,
                                   max_epochs=cfg.max_epochs, patience=cfg.patience, lr=cfg.lr, batch=cfg.batch,
                                   seed=cfg.seed + trial.number, time_limit=cfg.trial_time_limit,
                                   on_epoch=on_epoch)
        test_acc = evaluate(model, data.x_test, data.y_test)
        self._stage(trial, "building trained model")
        try:
            onnx = export_qonnx(model, torch.as_tensor(data.x_train[:1]), tdir / "model.onnx")
            post = measure_build(onnx, cfg, self.cost, tdir / "build")
        except Exception as e:  # noqa: BLE001  e.g. trained weights make an accumulator bound too large
            why = _why(e)
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

    @staticmethod
    def _constrain(trial, cons: list[float]) -> None:
        """Record the budget violations (<= 0: within budget) for the sampler and the report."""
        trial.set_user_attr("constraints", cons)
        if _set_constraint_api():
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


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------
def _counted_states():
    optuna = _optuna()
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

    optuna = _optuna()
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
def trial_rows(study) -> list[dict]:
    """One plain dict per trial (what the report and the progress display show)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        m = ua.get("metrics") or {}
        cons = ua.get("constraints")
        trained = "train" in ua
        rows.append({
            "number": t.number, "state": t.state.name, "status": ua.get("status", t.state.name.lower()),
            "reason": ua.get("reason", ""), "arch": ua.get("describe", ""), "arch_json": ua.get("arch"),
            "val_accuracy": (t.values[0] if (t.values and trained) else None),
            "test_accuracy": ua.get("test_accuracy"), "latency_ms": m.get("latency_ms"),
            "pred_instructions": m.get("pred_instructions"), "pred_cycles": m.get("pred_cycles"),
            "ram_bytes": m.get("ram_bytes"), "flash_bytes": m.get("flash_bytes"),
            "arena_bytes": m.get("arena_bytes"), "macs": m.get("macs"), "constraints": cons,
            "feasible": bool(cons is not None and max(cons) <= 0 and trained),
            "trained": trained, "epochs": (ua.get("train") or {}).get("epochs_run"),
            "seconds": ua.get("seconds"), "worker": ua.get("worker", ""), "artifact": ua.get("artifact"),
            "stage": ua.get("stage", ""),
        })
    return rows


def pareto_front(rows: list[dict]) -> list[dict]:
    """Feasible trained trials not dominated in (val accuracy max, latency min, RAM min)."""
    pts = [r for r in rows if r["feasible"]]

    def dominates(a, b):
        ge = (a["val_accuracy"] >= b["val_accuracy"] and a["latency_ms"] <= b["latency_ms"]
              and a["ram_bytes"] <= b["ram_bytes"])
        gt = (a["val_accuracy"] > b["val_accuracy"] or a["latency_ms"] < b["latency_ms"]
              or a["ram_bytes"] < b["ram_bytes"])
        return ge and gt

    front = [p for p in pts if not any(dominates(q, p) for q in pts if q is not p)]
    return sorted(front, key=lambda r: (-r["val_accuracy"], r["latency_ms"], r["ram_bytes"]))


def nearest_infeasible(rows: list[dict], k: int = 5) -> list[dict]:
    """Trials that came closest to the budgets: smallest sum of positive relative excesses."""
    cand = [r for r in rows if r["constraints"] is not None]
    return sorted(cand, key=lambda r: (sum(max(0.0, c) for c in r["constraints"]),
                                       -(r["val_accuracy"] or 0.0)))[:k]


class Progress:
    """Live progress: one line per finished trial, plus a status line on a terminal."""

    def __init__(self, n_trials: int, stream=None, t0: float | None = None):
        self.n = n_trials
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = t0 or time.monotonic()
        self.seen: set[int] = set()
        self.best: float | None = None
        self.feasible = 0
        self.done = 0
        self._status_len = 0

    def _clear(self):
        if self.tty and self._status_len:
            self.stream.write("\r" + " " * self._status_len + "\r")
            self._status_len = 0

    def trial(self, row: dict) -> None:
        if row["number"] in self.seen:
            return
        self.seen.add(row["number"])
        self.done += 1
        if row["feasible"]:
            self.feasible += 1
            self.best = max(self.best or 0.0, row["val_accuracy"])
        self._clear()
        acc = f"{row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "  -  "
        lat = f"{row['latency_ms']:7.2f} ms" if row["latency_ms"] is not None else "       -  "
        status = row["status"] + (f" ({row['reason']})" if row["reason"] and row["status"] != "feasible" else "")
        self.stream.write(
            f"[{self.done:>3}/{self.n}] #{row['number']:<4} val {acc}  {lat}  RAM {fmt_bytes(row['ram_bytes']):>10}  "
            f"flash {fmt_bytes(row['flash_bytes']):>10}  {row['arch'][:70]:<70}  {status[:60]}  "
            f"{row['seconds'] or 0:.0f} s | feasible {self.feasible}, best "
            f"{'-' if self.best is None else f'{self.best:.3f}'}  [{self._elapsed()}]\n")
        self.stream.flush()

    def status(self, running: list[dict]) -> None:
        if not self.tty:
            return
        parts = [f"#{r['number']}: {r['stage'] or 'starting'}" for r in running][:4]
        line = f"  {self.done}/{self.n} done, {len(running)} running [{self._elapsed()}]  " + "; ".join(parts)
        line = line[:200]
        self._clear()
        self.stream.write(line)
        self.stream.flush()
        self._status_len = len(line)

    def message(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"


def run_search(config: NasConfig, out_dir: str | Path, n_trials: int, storage: str | None = None,
               study_name: str = DEFAULT_STUDY, workers: int = 1, timeout: float | None = None,
               calibration: int = 40, cost_model_path: str | None = None, verify_top: int = 8,
               final_epochs: int = 0, export: bool = True, stream=None) -> dict:
    """Run (or resume) a search and write the report; returns the summary (summary.json)."""
    from .cost import load_or_calibrate
    from .datasets import load
    from .report import finish

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    progress = Progress(n_trials, stream)
    say = progress.message
    data = load(config.dataset, config.train_subset, config.seed)
    say(f"edgekit nas: {config.dataset} ({data.description})")
    say(f"  board {config.board} ({config.target}, {board_of(config).clock_hz / 1e6:g} MHz), budgets: "
        f"{config.budget.describe()}; {n_trials} trials, {workers} worker(s); study '{study_name}' in "
        f"{redact(storage)}")

    optuna = _optuna()
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
                                 max_macs=max_macs)
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
    try:
        if workers <= 1:
            def on_trial(t):
                for r in trial_rows_one(t):
                    progress.trial(r)

            def on_event(kind, number, text):
                progress.status([{"number": number, "stage": text}])

            run_worker(storage, study_name, out_dir, n_trials, 0, timeout, None, on_trial, on_event)
        else:
            _run_local_workers(storage, study_name, out_dir, n_trials, workers, timeout, progress)
    except KeyboardInterrupt:
        progress.message("interrupted: the study is saved; run the same command again to resume")
        raise
    for r in trial_rows(study):  # trials that finished but were not shown (other workers)
        if r["state"] in ("COMPLETE", "PRUNED"):
            progress.trial(r)
    progress.message(f"search done in {time.monotonic() - t0:.0f} s; writing the report"
                     + (" and exporting the best model" if export else ""))
    return finish(study, config, data, out_dir, storage=storage, study_name=study_name, verify_top=verify_top,
                  final_epochs=final_epochs, export=export, say=say)


def trial_rows_one(frozen) -> list[dict]:
    """trial_rows for one FrozenTrial (the in-process callback)."""
    class _S:
        def get_trials(self, deepcopy=False):
            return [frozen]
    return trial_rows(_S())


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
    optuna = _optuna()
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
