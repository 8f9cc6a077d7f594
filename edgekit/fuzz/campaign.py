"""A fuzz campaign: N seeded cases, failing ones shrunk and saved, a summary table or JSON."""
from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .limits import UNDOCUMENTED, documented_limits
from .runner import (DEFAULT_OPTIMIZE, EMULATED_BOARDS, GENERATORS, OPTIMIZE_MODES, STATUSES, Outcome, case_spec,
                     check_shapes, describe, model_file, run_case)
from .shrink import shrink


class IsolatedRunner:
    """Runs cases in a worker process, so that a graph which kills the process running edgekit
    (a segmentation fault in a native library: PyTorch's oneDNN convolution did, fuzz seed 3000181)
    is one "crash" outcome and the campaign goes on with a new worker."""

    def __init__(self, target=run_case):
        self._pool = None
        self._target = target  # a module-level function (the worker imports it by name)

    def __call__(self, spec: dict, work: Path, board: str, kernels: str, vectors: int, fpga: bool) -> Outcome:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:  # spawn: a fresh interpreter, no forked PyTorch or OpenMP threads
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        t0 = time.monotonic()
        try:
            return self._pool.submit(self._target, spec, work, board, kernels, vectors, fpga).result()
        except BrokenProcessPool:
            self.close()
            return Outcome("crash", "edgekit process",
                           "the Python process running build and verify died (a fatal signal in a native "
                           "library); rerun the saved spec with `python -X faulthandler -m edgekit fuzz "
                           "--spec` to see where", round(time.monotonic() - t0, 2))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass
class CaseResult:
    index: int
    seed: int
    description: str
    outcome: Outcome
    saved: str = ""  # folder of the shrunk reproducer, for failures
    shrunk: str = ""  # description of the shrunk graph
    spec: dict = field(default_factory=dict, repr=False)  # the spec run (its optimize, flash_goal_scale)

    def to_json(self) -> dict:
        return {"index": self.index, "seed": self.seed, "graph": self.description, "mode": _mode(self.spec),
                **self.outcome.to_json(),
                "saved": self.saved, "shrunk": self.shrunk}


@dataclass
class Campaign:
    board: str
    kernels: str
    seed: int
    fpga: bool
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C: the results of the graphs done

    def counts(self) -> Counter:
        return Counter(c.outcome.status for c in self.cases)

    def kernel_variants(self) -> Counter:
        """Layers per kernel variant over the graphs built: which kernel paths the campaign reached."""
        total = Counter()
        for c in self.cases:
            total.update(c.outcome.build.get("kernels") or {})
        return total

    def optimize_modes(self) -> Counter:
        """Graphs per build mode ("balanced", "size, goal x0.97", ...): the mode each spec was built with."""
        return Counter(_mode(c.spec) for c in self.cases if c.spec)

    def classes(self) -> Counter:
        return Counter(c.outcome.key for c in self.cases if c.outcome.status != "ok")

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.outcome.failed]

    @property
    def undocumented(self) -> list[str]:
        return sorted({c.outcome.where for c in self.cases
                       if c.outcome.status == "refused" and UNDOCUMENTED in c.outcome.where})

    @property
    def ok(self) -> bool:
        return not self.failures and not self.counts().get("generator")

    def to_json(self) -> dict:
        return {"board": self.board, "core": EMULATED_BOARDS[self.board], "kernels": self.kernels, "seed": self.seed,
                "fpga": self.fpga, "count": len(self.cases), "interrupted": self.interrupted,
                "seconds": round(self.seconds, 1),
                "outcomes": dict(self.counts()), "classes": dict(self.classes()),
                "undocumented_refusals": self.undocumented, "ok": self.ok,
                "modes": dict(self.optimize_modes()), "kernel_variants": dict(self.kernel_variants()),
                "cases": [c.to_json() for c in self.cases]}

    def table(self) -> str:
        n = len(self.cases)
        counts = self.counts()
        seeds = f"seeds {self.cases[0].seed}..{self.cases[-1].seed}" if n > 1 else \
            f"seed {self.cases[0].seed}" if n else "none run"
        lines = [f"edgekit fuzz: {n} graphs ({seeds}) on {self.board} ({EMULATED_BOARDS[self.board]}), "
                 f"{self.kernels} kernels{', hls4ml C-simulation' if self.fpga else ''}, {self.seconds:.0f} s",
                 f"{'outcome':<72}{'graphs':>8}"]
        modes = self.optimize_modes()
        if modes:
            lines.insert(1, "built with --optimize " + ", ".join(f"{m} ({k})" for m, k in sorted(modes.items())))
        for status in STATUSES:
            lines.append(f"{status:<72}{counts.get(status, 0):>8}")
            for key, k in sorted(self.classes().items(), key=lambda kv: (-kv[1], kv[0])):
                if key.split(":", 1)[0] == status:
                    where = key.split(":", 1)[1]
                    if UNDOCUMENTED in where:  # also "fpga: undocumented: ..."
                        where = "[not in docs] " + where.replace(UNDOCUMENTED, "")
                    lines.append(f"  {where[:68]:<70}{k:>8}")
        listed = Counter()
        for c in self.failures:  # the first three of each class; the rest are in the JSON
            listed[c.outcome.key] += 1
            if listed[c.outcome.key] <= 3:
                lines.append(f"FAILED seed {c.seed}: {c.outcome.key}: {c.outcome.message.splitlines()[0][:160]}"
                             + (f"\n  shrunk to {c.shrunk}, saved in {c.saved}" if c.saved else ""))
        for key, k in listed.items():
            if k > 3:
                lines.append(f"  ... and {k - 3} more {key} (seeds "
                             f"{', '.join(str(c.seed) for c in self.failures if c.outcome.key == key)})")
        variants = self.kernel_variants()
        if variants:
            lines.append("kernel variants (layers): " + ", ".join(f"{v} {k}" for v, k in sorted(variants.items())))
        if self.undocumented:
            lines.append(f"{len(self.undocumented)} refusal class(es) not listed as limits in docs/limits.md or "
                         "docs/fuzz.md")
        if not documented_limits():
            lines.append("note: no docs/ folder found, refusals cannot be checked against the documented limits")
        if self.interrupted:
            lines.append(f"interrupted after {n} graphs")
        lines.append("PASS: no mismatch, crash or internal error" if self.ok else
                     "FAIL: mismatches, crashes or internal errors (see above)")
        return "\n".join(lines)


def _mode(spec: dict) -> str:
    """A spec's build mode: its --optimize, and the tightened flash goal's scale if any."""
    mode = spec.get("optimize", DEFAULT_OPTIMIZE)
    scale = spec.get("flash_goal_scale")
    return mode if scale is None else f"{mode}, flash goal x{scale:g}"


def with_build_mode(spec: dict, optimize: str | None, flash_goal_scale: float | None) -> dict:
    """``spec`` with the build mode to run it with: the given options, else the spec's own (a saved
    reproducer's), else balanced at the default flash goal."""
    spec = dict(spec)
    if optimize is not None:
        spec["optimize"] = optimize
    spec.setdefault("optimize", DEFAULT_OPTIMIZE)
    if flash_goal_scale is not None:
        spec["flash_goal_scale"] = flash_goal_scale
    return spec


def check_build_mode(spec: dict, kernels: str, where: str = "--optimize") -> None:
    from ..errors import TargetError

    optimize, scale = spec.get("optimize", DEFAULT_OPTIMIZE), spec.get("flash_goal_scale")
    if optimize not in OPTIMIZE_MODES:
        raise TargetError(f"{where}: optimize '{optimize}': choose one of {', '.join(OPTIMIZE_MODES)}")
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise TargetError(f"{where}: --flash-goal-scale {scale}: give a factor in (0, 1], e.g. 0.97")
    if kernels != "optimized" or optimize == "speed":
        raise TargetError(f"{where}: --flash-goal-scale applies to optimized kernels under --optimize size or "
                          "balanced (speed and reference kernels ignore the flash goal)")


def _save(case: CaseResult, spec: dict, original: dict, work: Path, out: Path, board: str, kernels: str) -> Path:
    """The shrunk reproducer: spec, model, inputs, outcome and the commands that show the failure."""
    dest = out / f"{case.outcome.status}-seed{case.seed}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    model = model_file(spec, dest)
    if (work / "inputs.npy").is_file():
        shutil.copy(work / "inputs.npy", dest / "inputs.npy")
    (dest / "spec.json").write_text(json.dumps(spec, indent=1))
    (dest / "original_spec.json").write_text(json.dumps(original, indent=1))
    (dest / "outcome.json").write_text(json.dumps(case.to_json(), indent=1))
    core = EMULATED_BOARDS[board]
    optimize = f" --optimize {spec.get('optimize', DEFAULT_OPTIMIZE)}" if kernels == "optimized" else ""
    goal = case.outcome.build.get("flash_goal")
    (dest / "README.txt").write_text(
        f"{case.outcome.key}: {case.outcome.message}\n\nreproduce:\n"
        f"  edgekit fuzz --spec spec.json --board {board} --kernels {kernels}   (the spec records its build mode: "
        f"{_mode(spec)})\n"
        + (f"  (the flash goal was tightened to {goal} B, {spec.get('flash_goal_scale')} x the default build's "
           "firmware flash; only `edgekit fuzz --spec` sets it)\n" if goal else "")
        + f"  edgekit build {model.name} --target {core} --board {board} --kernels {kernels}{optimize} -o build\n"
        f"  edgekit verify build" + (" --inputs inputs.npy" if (dest / "inputs.npy").is_file() else "") + "\n"
        + ("\nverify itself passes: every stage gets the same wrong codes. See them with\n"
           "  python -c \"import numpy as np; from pathlib import Path; from edgekit.ir.graph import Graph; "
           "from edgekit.sim import quantize_input; "
           "print(quantize_input(Graph.load(Path('build')), np.load('inputs.npy')[-5:-1]))\"\n"
           if case.outcome.where == "input quantizer (saturation)" else ""))
    return dest


def run_campaign(count: int, seed: int = 0, board: str = "mps2-an386", kernels: str = "optimized",
                 fpga: bool = False, out: str | Path | None = None, vectors: int = 24, tflite_share: float = 0.25,
                 shrink_budget: int = 40, shrink_per_class: int = 2, max_layers: int = 5, progress=None,
                 seeds: list[int] | None = None, specs: list[dict] | None = None, optimize: str | None = None,
                 flash_goal_scale: float | None = None, wide: bool = False) -> Campaign:
    """Run ``count`` cases (seeds ``seed`` .. ``seed + count - 1``, the given ``seeds``, or the given
    ``specs``, e.g. a saved reproducer's spec.json), built with ``optimize`` (else a spec's own, else
    balanced); ``flash_goal_scale`` F builds each graph at the default flash goal, then again with the goal
    at F x that firmware's flash (runner.tightened_flash_goal), and verifies the second. The first
    ``shrink_per_class`` failures of each outcome and stage are shrunk (at most ``shrink_budget`` runs)
    and saved in ``out``; later ones of the same class are only counted and listed."""
    from ..errors import TargetError

    if board not in EMULATED_BOARDS:
        raise TargetError(f"board '{board}' is not emulated; fuzz on one of {', '.join(EMULATED_BOARDS)}")
    if kernels not in ("optimized", "reference"):
        raise TargetError(f"kernels '{kernels}': choose optimized or reference")
    if count < 1:
        raise TargetError("--count must be at least 1")
    camp = Campaign(board, kernels, seed, fpga)
    out_dir = Path(out) if out else None
    t0 = time.monotonic()
    if specs is None:
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(count)]
        specs = [case_spec(s, tflite_share, max_layers, fpga, wide) for s in seeds]
    specs = [with_build_mode(s, optimize, flash_goal_scale) for s in specs]
    for s in specs:
        check_build_mode(s, kernels)
    runner = IsolatedRunner()
    with tempfile.TemporaryDirectory(prefix="edgekit-fuzz-") as tmp:
        try:
            for i, spec in enumerate(specs):
                case = _run_one(camp, i, spec, Path(tmp), out_dir, vectors, shrink_budget, shrink_per_class,
                                runner)
                camp.cases.append(case)
                if progress:
                    progress(case, i + 1, len(specs))
        except KeyboardInterrupt:  # Ctrl-C ends a long campaign with the summary of the graphs done
            camp.interrupted = True
        finally:
            runner.close()
    camp.seconds = time.monotonic() - t0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(camp.to_json(), indent=1))
    return camp


def _run_one(camp: Campaign, index: int, spec: dict, tmp: Path, out_dir: Path | None, vectors: int,
             shrink_budget: int, shrink_per_class: int, run_case=run_case) -> CaseResult:
    """One case; a failure is shrunk and saved unless ``shrink_per_class`` of its class were."""
    board, kernels, fpga = camp.board, camp.kernels, camp.fpga
    case_seed = spec["seed"]
    work = tmp / f"case{case_seed}"
    outcome = run_case(spec, work, board, kernels, vectors, fpga)
    case = CaseResult(index, case_seed, describe(spec), outcome, spec=spec)
    shrunk_before = sum(1 for c in camp.cases if c.saved and c.outcome.key == outcome.key)
    if outcome.failed and out_dir is not None and shrunk_before < shrink_per_class:
        key, attempt = outcome.key, itertools.count()

        def still_fails(cand: dict) -> bool:
            w = tmp / f"shrink{case_seed}-{next(attempt)}"
            res = run_case(cand, w, board, kernels, vectors, fpga)
            shutil.rmtree(w, ignore_errors=True)
            return res.key == key

        small, _ = shrink(spec, still_fails, budget=shrink_budget)
        final = tmp / f"final{case_seed}"
        run_case(small, final, board, kernels, vectors, fpga)  # its inputs for the reproducer
        case.shrunk = describe(small)
        case.saved = str(_save(case, small, spec, final, out_dir, board, kernels))
        shutil.rmtree(final, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return case


def print_progress(case: CaseResult, done: int, total: int) -> None:
    o = case.outcome
    status = o.key if o.status != "ok" else "ok"
    print(f"[{done}/{total}] seed {case.seed} {case.description[:70]}: {status[:90]} ({o.seconds:.1f} s)",
          file=sys.stderr, flush=True)


def load_spec(path: str | Path) -> dict:
    """A spec.json saved by a campaign (or written by hand), checked before anything runs."""
    from ..errors import EdgekitError

    try:
        spec = json.loads(Path(path).read_text())
        valid = isinstance(spec, dict) and spec.get("kind") in GENERATORS and check_shapes(spec) is None
    except (OSError, ValueError) as e:
        raise EdgekitError(f"{path}: cannot read the spec ({e})") from None
    except (KeyError, TypeError, AttributeError, IndexError):
        valid = False
    if not valid:
        raise EdgekitError(f"{path}: not a valid fuzz spec (a spec.json saved by edgekit fuzz)")
    if spec.get("optimize", DEFAULT_OPTIMIZE) not in OPTIMIZE_MODES:
        raise EdgekitError(f"{path}: optimize '{spec['optimize']}' is none of {', '.join(OPTIMIZE_MODES)}; fix the "
                           "spec or pass --optimize")
    return spec


def main(args) -> int:
    """``edgekit fuzz``: exit 0 when no graph mismatched, crashed or hit an internal error, else 1."""
    specs = [load_spec(p) for p in args.spec] if args.spec else None
    camp = run_campaign(len(specs) if specs else args.count, seed=args.seed, specs=specs, board=args.board,
                        kernels=args.kernels, fpga=args.fpga, optimize=args.optimize,
                        flash_goal_scale=args.flash_goal_scale, wide=args.wide,
                        out=args.out, vectors=args.vectors, tflite_share=args.tflite_share,
                        shrink_budget=args.shrink_budget, shrink_per_class=args.shrink_per_class,
                        progress=None if args.quiet else print_progress)
    print(json.dumps(camp.to_json(), indent=1) if args.json else camp.table())
    if not camp.ok:
        return 1
    return 130 if camp.interrupted else 0


def add_parser(sub) -> None:
    """The ``fuzz`` subcommand (registered by edgekit/cli.py)."""
    f = sub.add_parser("fuzz", help="differential fuzzing: random quantized graphs through every stage",
                       description="Draw random quantized graphs (Brevitas -> QONNX, and int8 TFLite), build each "
                       "for an emulated board and verify it through every stage (qonnx or TFLite Micro, simulator, "
                       "host C, firmware on QEMU; optionally hls4ml C-simulation) with inputs far outside the input "
                       "range. Refusals are counted by documented limit; mismatches, crashes and internal errors are "
                       "shrunk and saved with their inputs. Exits 1 if any graph failed. See docs/fuzz.md.")
    f.add_argument("--count", type=int, default=50, help="number of graphs (50)")
    f.add_argument("--seed", type=int, default=0, help="first seed; graph i uses seed + i (0)")
    f.add_argument("--board", default="mps2-an386", choices=sorted(EMULATED_BOARDS),
                   help="emulated board (mps2-an386, Cortex-M4)")
    f.add_argument("--kernels", choices=["optimized", "reference"], default="optimized",
                   help="kernels to build with (optimized)")
    f.add_argument("--optimize", choices=list(OPTIMIZE_MODES), help="--optimize of every build (balanced; a "
                   "--spec rerun takes the spec's own unless given)")
    f.add_argument("--flash-goal-scale", type=float, metavar="F", help="build each graph at the default flash "
                   "goal, then again with the goal at F x that firmware's flash (0 < F <= 1), and verify the second: "
                   "small graphs meet the default goal with int16 weights, so this is what makes balanced take the "
                   "int8, compact and lean layouts and conv2d_gemm_widen, and size the lean ones (size and "
                   "balanced only; recorded in the spec)")
    f.add_argument("--wide", action="store_true", help="draw the TFLite graphs with 8-64 channels per convolution "
                   "(MobileNet-like layers: with --flash-goal-scale the lean layouts dw3_compact and compact GEMM "
                   "records, and conv2d_gemm_widen, get taken); use with --tflite-share 1 for only those")
    f.add_argument("--spec", action="append", metavar="FILE", help="run this saved spec.json instead of random "
                   "graphs (repeatable): reruns, and with --out shrinks, a reproducer")
    f.add_argument("--fpga", action="store_true", help="draw QONNX graphs in what the FPGA backend builds (conv, "
                   "depthwise, max pool, ReLU, dense chains) and also compare hls4ml's C-simulation")
    f.add_argument("--out", help="folder for shrunk failing graphs with their inputs, and summary.json")
    f.add_argument("--vectors", type=int, default=24, help="generated input vectors per graph, plus 5 far outside "
                   "the input range (24)")
    f.add_argument("--tflite-share", type=float, default=0.25, help="share of int8 TFLite graphs (0.25)")
    f.add_argument("--shrink-budget", type=int, default=40, help="build-and-verify runs the shrinker may spend "
                   "on one failing graph (40)")
    f.add_argument("--shrink-per-class", type=int, default=2, help="failing graphs shrunk and saved per outcome "
                   "class; later ones are counted and listed (2)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    f.add_argument("--json", action="store_true", help="print the summary as JSON")
    f.set_defaults(func=main)
