"""``edgekit nas`` and ``edgekit nas-worker``: argument parsing and the commands.

Kept here so that ``edgekit/cli.py`` only registers the two subcommands; nothing heavy
(torch, optuna) is imported until a command runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys

from ..errors import EdgekitError


def _duration(text: str | None) -> float | None:
    """Seconds from '600', '600s', '10m', '1.5h'."""
    if text is None:
        return None
    t = str(text).strip().lower()
    try:
        for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
            if t.endswith(suffix) and not (suffix == "s" and t.endswith("ms")):
                return float(t[: -len(suffix)]) * mult
        return float(t)
    except ValueError:
        raise EdgekitError(f"cannot read a duration from '{text}'; write e.g. 600, 600s, 10m or 1h") from None


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise EdgekitError(f"{what}: expected comma-separated integers, got '{text}'") from None
    if not vals:
        raise EdgekitError(f"{what}: no values")
    return vals


def cmd_nas(args) -> int:
    from ..targets import get_board
    from .config import Budget, NasConfig, parse_latency, parse_size
    from .study import DEFAULT_STUDY, run_search
    from .space import SpaceConfig

    board = get_board(args.board)
    target = args.target or board.core
    if target != board.core:
        raise EdgekitError(f"board '{board.name}' has a {board.core}, not a {target}")
    space = SpaceConfig()
    kw = {}
    if args.dims:
        dims = _ints(args.dims, "--dims")
        if set(dims) - {1, 2}:
            raise EdgekitError("--dims takes 1 and/or 2")
        kw["dims"] = dims
    if args.max_depth:
        kw["depth"] = tuple(range(1, args.max_depth + 1))
    weight_bits = "sampled"
    if args.bits and args.bits.strip().lower() == "hawq":
        # weights at 8 bits in the drawn architecture; the trial allocates them (nas/hawq.py)
        weight_bits, kw["w_bits"], kw["a_bits"] = "hawq", (8,), (8,)
    elif args.bits:
        try:
            bits = _ints(args.bits, "--bits")
        except EdgekitError:
            raise EdgekitError(f"--bits: expected comma-separated widths (2, 4, 8) or hawq, got '{args.bits}'") from None
        if set(bits) - {2, 4, 8}:
            raise EdgekitError("--bits takes 2, 4 and/or 8, or hawq")
        kw["w_bits"] = kw["a_bits"] = bits
    if args.channels:
        kw["channels"] = _ints(args.channels, "--channels")
    space = SpaceConfig.from_json({**space.to_json(), **{k: list(v) for k, v in kw.items()}})
    budget = Budget(parse_size(args.max_ram) if args.max_ram else None,
                    parse_size(args.max_flash) if args.max_flash else None,
                    parse_latency(args.max_latency) if args.max_latency else None)
    if args.trials < 1:
        raise EdgekitError("--trials must be at least 1")
    for flag, value in (("--epochs", args.epochs), ("--patience", args.patience), ("--batch", args.batch)):
        if value is not None and value < 1:
            raise EdgekitError(f"{flag} must be at least 1 (leave it out to derive it from the training set's size)")
    config = NasConfig(board=args.board, target=target, budget=budget, dataset=args.dataset,
                       train_subset=args.train_subset, space=space.to_json(), max_epochs=args.epochs,
                       patience=args.patience, lr=args.lr, batch=args.batch,
                       trial_time_limit=_duration(args.trial_time_limit), seed=args.seed,
                       measure_band=args.measure_band, weight_bits=weight_bits)
    # with --json the search's lines go to stderr and stdout carries only the summary
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        summary = run_search(config, args.output, args.trials, storage=args.storage,
                             study_name=args.study or DEFAULT_STUDY, workers=args.workers,
                             timeout=_duration(args.timeout), calibration=args.calibration,
                             recalibrate=args.recalibrate, cost_model_path=args.cost_model,
                             verify_top=args.verify_top, final_epochs=args.final_epochs, export=not args.no_export)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    if args.no_export:
        return 0
    return 0 if summary["feasible"] else 1


def cmd_nas_worker(args) -> int:
    from .study import run_worker

    index = args.worker_index
    if index is None:  # distinct sampler seeds on every machine and process
        index = int(hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()[:6], 16)
    out = args.output or "nas_worker_out"
    quiet = args.quiet

    stream = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the JSON

    def on_trial(t):
        if not quiet:
            ua = t.user_attrs
            val = f"{t.values[0]:.4f}" if t.values and "train" in ua else "-"
            print(f"trial {t.number}: {ua.get('status', t.state.name.lower())}  val {val}  "
                  f"{ua.get('describe', '')}  {ua.get('reason', '')}", file=stream, flush=True)

    n = run_worker(args.storage, args.study, out, args.trials, index, _duration(args.timeout), args.threads,
                   on_trial=on_trial)
    if args.json:
        print(json.dumps({"study": args.study, "trials_run": n, "output": out}))
    elif not quiet:
        print(f"nas-worker: ran {n} trials; study '{args.study}' continues in the shared storage", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    from .datasets import DATASETS

    n = sub.add_parser(
        "nas", help="architecture search under RAM, flash and latency budgets; exports the best verified model",
        description="Search small 1D/2D CNNs (depth, width, kernel, stride, pooling, depthwise-separable or full "
        "convolutions, 2/4/8-bit weights and activations per layer) with optuna for validation accuracy, latency "
        "and RAM under the board's budgets. RAM and flash are exact (every candidate is built); latency comes "
        "from a cost model calibrated on the emulator's exact instruction counts. The study is stored in "
        "SQLite (or any database URL) and resumes when run again. Every returned model is built for the board, "
        "verified bit-exactly on the QEMU board with the same core, and profiled. Exits 1 when no model meets "
        "the budgets (the report says what came nearest) or none beats the majority-class baseline on validation "
        "data by max(5 points, 3 standard errors) (it lists the most accurate trials).")
    n.add_argument("--board", required=True, help="board to fit, e.g. nucleo-l4r5zi (see `edgekit targets`)")
    n.add_argument("--target", help="core (default: the board's)")
    n.add_argument("--max-ram", help="RAM budget, e.g. 64KB (KB = KiB = 1024 bytes): the firmware's whole RAM "
                   "(arena, I/O buffers, static data, reserved stack)")
    n.add_argument("--max-flash", help="flash budget, e.g. 256KB: code + weights + runtime")
    n.add_argument("--max-latency", help="latency budget per inference at the board's clock, e.g. 20ms")
    n.add_argument("--dataset", default="har", choices=DATASETS, help="data set (har)")
    n.add_argument("--trials", type=int, default=60, help="trials in the study, all workers together (60)")
    n.add_argument("-o", "--output", required=True, help="output directory (study.db, report, best/)")
    n.add_argument("--workers", type=int, default=1, help="local worker processes (1)")
    n.add_argument("--storage", help="optuna storage URL shared by all workers (default: sqlite:///OUTPUT/study.db;"
                   " e.g. postgresql://user:password@host/db)")
    n.add_argument("--study", help="study name (edgekit-nas)")
    n.add_argument("--timeout", help="stop starting trials after this long, e.g. 10m")
    n.add_argument("--epochs", type=int, help="most QAT epochs per trial (early stopping; default from the "
                   "training set's size: enough for 120 optimizer steps, 6 to 60; HAR 6, BasicMotions 30)")
    n.add_argument("--patience", type=int, help="epochs without validation gain before stopping (default: "
                   "epochs / 5, at least 2)")
    n.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (0.005)")
    n.add_argument("--batch", type=int, help="batch size (default: training set size / 8, from 8 to 64; HAR 64, "
                   "BasicMotions 8)")
    n.add_argument("--train-subset", type=int, help="train each trial on this many random training windows")
    n.add_argument("--trial-time-limit", help="stop a trial's training after this long, e.g. 90s")
    n.add_argument("--seed", type=int, default=0, help="seed (0)")
    n.add_argument("--measure-band", type=float, default=0.15, help="count a candidate's instructions on QEMU "
                   "when the cost model puts its latency within this fraction of the budget (0.15; 0: never)")
    n.add_argument("--dims", help="convolution kinds: 1, 2 or 1,2 (1,2)")
    n.add_argument("--max-depth", type=int, help="most convolution blocks (4)")
    n.add_argument("--bits", help="weight/activation bit widths to search, e.g. 4,8 (2,4,8); or hawq: 8-bit "
                   "activations, and each candidate's weight widths (8/4/2 per block) chosen by Hessian-aware "
                   "allocation within the budgets after training at 8 bits, then fine-tuned (docs/nas.md)")
    n.add_argument("--channels", help="channel choices, e.g. 8,16,32 (4,8,12,16,24,32,48,64)")
    n.add_argument("--calibration", type=int, default=40, help="architectures profiled to fit the latency model "
                   "on first use (40, plus a third as held-out; cached per core and kernel set)")
    n.add_argument("--recalibrate", action="store_true", help="fit the latency model afresh even when the cache "
                   "(~/.cache/edgekit/nas, per core and kernel set) has one, and replace the cached one")
    n.add_argument("--cost-model", help="a cost model JSON (cost_model.json of an earlier search) instead")
    n.add_argument("--verify-top", type=int, default=8, help="Pareto models to check and verify (8)")
    n.add_argument("--final-epochs", type=int, default=0, help="retrain the best model for up to this many "
                   "epochs on the full training set before export (0: keep the search's weights)")
    n.add_argument("--no-export", action="store_true", help="only search and report")
    n.add_argument("--json", action="store_true", help="print the summary (summary.json) as JSON; the search's "
                   "lines go to stderr")
    n.set_defaults(func=cmd_nas)

    w = sub.add_parser("nas-worker", help="join an architecture search from this machine",
                       description="Run trials of a study that `edgekit nas` created in a shared database (e.g. "
                       "PostgreSQL): the settings come from the study. Trained models stay in -o on this machine; "
                       "`edgekit nas` retrains one it needs but cannot read.")
    w.add_argument("--storage", required=True, help="optuna storage URL, e.g. postgresql://user:pw@host/db")
    w.add_argument("--study", default="edgekit-nas", help="study name (edgekit-nas)")
    w.add_argument("-o", "--output", help="where this worker keeps trained models (nas_worker_out)")
    w.add_argument("--trials", type=int, help="stop when the study has this many trials (default: the study's)")
    w.add_argument("--timeout", help="stop starting trials after this long, e.g. 30m")
    w.add_argument("--worker-index", type=int, help=argparse_hidden())
    w.add_argument("--threads", type=int, help="torch threads")
    w.add_argument("--quiet", action="store_true", help="no per-trial lines")
    w.add_argument("--json", action="store_true", help="print the trials run as JSON (per-trial lines to stderr)")
    w.set_defaults(func=cmd_nas_worker)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS
