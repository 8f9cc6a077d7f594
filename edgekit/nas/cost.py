"""Per-core latency model calibrated against exact instruction counts on the emulator.

The search needs the latency of thousands of candidate layers without running each on
QEMU, so it predicts it from the layer shapes with a linear model per layer kind, fitted
by least squares to per-layer counts that ``edgekit profile`` measures exactly (QEMU TCG
plugin) on a set of calibration architectures drawn from the search space:

* full convolution: executed MACs, executed taps (x output channels), kx- and ky-loop
  iterations, output elements, output pixels, and a constant;
* depthwise convolution: executed taps, kx/ky-loop iterations, output elements,
  output pixels, constant;
* dense: MACs, outputs, constant;
* max/average pooling: executed taps, window iterations, output elements, output pixels,
  constant;
* anything else (relu, requantize, add...): output elements, constant; reshape: nothing;
* glue (``ek_model_run`` itself): constant + per layer.

"Executed" counts skip the taps that fall into the padding, exactly as the kernels do.
The kinds, their features and how they are computed belong to the kernel variants
(``backends/cortexm/kernels/``: each declares ``cost_kinds`` and computes ``cost_features``
with the constants of its own weight layout); this module asks the variant the build chose
(the manifest's ``kernel_variants``) and copies none of it.
Each kind is refined by what changes the generated code: the kernel the build chose (an
optimized kernel variant or the reference one), the weights' storage width
(2- and 4-bit weights are unpacked inside the kernel) and whether the layer runs in place;
a refinement with too few calibration layers falls back to its parent kind. The fit is
weighted by 1/measured count, so it minimises relative errors per layer.
Two models with the same features are fitted: one to the exact **instruction** counts,
one to the profiler's **cycle estimate** (instruction classes costed with the core's
``[timing]`` table, see ``edgekit/backends/cortexm/profile.py``); latency in ms is the
predicted cycles divided by the board's clock, the same conversion ``edgekit profile``
uses. The error against measured counts on held-out architectures is stored with the
model and printed by ``edgekit nas``.

A calibration depends on the generated kernels, the compiler and its flags, so it is
cached per user (``$EDGEKIT_CACHE``, else ``$XDG_CACHE_HOME/edgekit``, else
``~/.cache/edgekit``; in ``nas/``) per core and kernel set: keyed by edgekit's version and a
hash of the C templates, firmware sources, code generator, IR and operator modules,
compiler version and core flags (any change there recalibrates), the search space the
architectures are drawn from, and the MAC cap rounded up to a power of two. The input
shape is not part of the key: the features are loop trip counts, so a model fitted on
HAR's 128 x 6 windows predicts BasicMotions' 100 x 6 ones; searches of other data sets
and similar budgets reuse one calibration.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.cortexm.kernels.common import first_work
from ..backends.cortexm.kernels.registry import REFERENCE, registry
from ..errors import EdgekitError
from ..manifest import Manifest


def _kind_tables() -> tuple[dict, dict, dict]:
    """kind -> features, reduced features and work terms, as the kernel variants declare them
    (reference kernels: conv, dwconv, dense, pools, eltwise; optimized ones: their loop trip counts)."""
    features, reduced, work = {}, {}, {}
    for v in registry().all():
        features.update(v.cost_kinds)
        reduced.update(v.cost_reduced)
        work.update(v.cost_work)
    features["glue"] = ("const", "layers")
    # last resort for a layer kind the calibration never saw: the main loop count and outputs
    features["any"] = ("work", "outputs", "const")
    return features, reduced, work


KIND_FEATURES, REDUCED, WORK = _kind_tables()
COST_MODEL_VERSION = 3


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------
def _aliased(plan: dict, names: list[str], out: str) -> bool:
    """Whether an input shares storage with the output (the kernel then runs in place;
    the same rule as the code generator's)."""
    t = plan.get("tensors", {})
    if out not in t:
        return False
    po = t[out]
    for n in names:
        pi = t.get(n)
        if pi is None or pi["buffer"] != po["buffer"]:
            continue
        if pi["buffer"] != "arena":
            return True
        if pi["offset"] < po["offset"] + po["size"] and po["offset"] < pi["offset"] + pi["size"]:
            return True
    return False


def _kernel_variant(manifest: dict | None, name: str) -> str:
    """The kernel variant the build chose for a node (manifest ``kernel_variants``)."""
    if not manifest:
        return REFERENCE
    variants = manifest.get("kernel_variants")
    if variants is None:
        if manifest.get("kernels", "reference") != "reference":
            raise EdgekitError("the build's manifest does not record its kernel variants (an older edgekit "
                               "made it); build it again")
        return REFERENCE
    return variants.get(name, REFERENCE)


def layer_info(graph, manifest: Manifest | dict | None = None) -> list[dict]:
    """Raw description of every node (what the features are computed from): op, shapes,
    kernel, stride, padding, depthwise, weight storage width, in-place, chosen kernel.
    ``manifest``: the build's :class:`Manifest` (or its JSON form)."""
    from ..ir.packing import packed_bits

    if isinstance(manifest, Manifest):
        manifest = manifest.to_json()

    plan = (manifest or {}).get("memory_plan") or {}
    rows = []
    for n in graph.nodes:
        y = graph.tensors[n.outputs[0]]
        x = graph.tensors[n.inputs[0]]
        a = n.attrs
        info = {"name": n.name, "op": n.op, "in": list(x.shape), "out": list(y.shape), "in_dtype": x.dtype}
        for k in ("kernel", "stride", "dilation", "pad", "depthwise", "num", "den"):
            if k in a:
                info[k] = list(a[k]) if isinstance(a[k], (list, tuple)) else a[k]
        if n.op in ("conv2d", "dense") and len(n.inputs) > 1:
            info["wbits"] = packed_bits(graph.tensors[n.inputs[1]].bits)
        acts = [i for i in n.inputs if i not in graph.constants]
        info["inplace"] = _aliased(plan, acts, n.outputs[0])
        info["variant"] = _kernel_variant(manifest, n.name)
        rq = a.get("requant")
        if rq is not None:
            one = len(rq.multiplier) == 1 and rq.multiplier[0] == 1
            # a shift by 1 has a cheaper rounding than longer shifts (ek_rshift_rne32 folds `rem > half`)
            info["rq"] = ("shift1" if one and rq.shift[0] == 1 else "shift" if one and 0 < rq.shift[0] <= 31
                          else "none" if one and rq.shift[0] == 0 else "mul")
        rows.append(info)
    return rows


def _variant_of(info: dict):
    """The registered variant that runs the layer, or None (a kernel this edgekit does not know)."""
    return registry().get(info.get("variant", REFERENCE))


def kind_chain(base: str, info: dict) -> list[str]:
    """Most specific first: base.refinements[.inplace] -> ... -> base (the fit falls back along
    it when a specific kind had too few calibration layers); the refinements are what the
    variant running the layer says changes its code."""
    parts = [base]
    variant = _variant_of(info)
    if variant is None:
        variant = registry().get(REFERENCE)
        parts.append(f"opt-{info['variant']}")  # a kernel this model has no features for: its own coefficients
    parts += variant.cost_refinements(base, info)
    if info.get("inplace"):
        parts.append("inplace")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def features(info: dict) -> tuple[str, dict]:
    """(base kind, features) of one layer from :func:`layer_info`, as the kernel variant that
    runs it counts them (the reference kernel's when the variant is unknown)."""
    return (_variant_of(info) or registry().get(REFERENCE)).cost_features(info)


def _work(kind: str, f: dict) -> float:
    """The count of a layer's innermost work (MACs, taps, words...), for the "any" fallback."""
    return first_work(f, WORK.get(kind, ()))


def chain_of(base: str, info: dict) -> list[str]:
    return kind_chain(base, info) + ["any"] if base != "zero" else ["zero"]


def layer_features(graph, manifest: Manifest | dict | None = None) -> list[tuple[str, list[str], dict]]:
    """(node name, kind chain, features) per node, in execution order."""
    out = []
    for i in layer_info(graph, manifest):
        base, f = features(i)
        if base != "zero":
            f = dict(f, work=_work(base, f))
        out.append((i["name"], chain_of(base, i), f))
    return out


def _vector(kind: str, f: dict) -> np.ndarray:
    base = kind.split(".")[0]
    return np.array([float(f.get(k, 0)) for k in KIND_FEATURES[base]])


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
@dataclass
class CostModel:
    core: str
    key: str                                   # hash of what the counts depend on
    coef: dict = field(default_factory=dict)   # target ("instructions"/"cycles") -> kind -> [coef]
    stats: dict = field(default_factory=dict)  # calibration summary and held-out errors

    def layer_cost(self, target: str, chain: list[str], f: dict) -> float:
        if chain == ["zero"]:
            return 0.0
        table = self.coef[target]
        for kind in chain:
            if kind in table:
                return float(_vector(kind, f) @ np.asarray(table[kind]))
        raise EdgekitError(f"the cost model has no coefficients for {chain[-1]} layers; recalibrate")

    def glue_cost(self, target: str, n_layers: int) -> float:
        return float(_vector("glue", {"const": 1, "layers": n_layers}) @ np.asarray(self.coef[target]["glue"]))

    def predict_layers(self, feats: list[tuple[str, list[str], dict]]) -> dict:
        """Predicted instructions and cycles of one inference, in total and per layer."""
        out = {"instructions": 0.0, "cycles": 0.0, "layers": []}
        for name, chain, f in feats:
            row = {"name": name, "kind": chain[0]}
            for target in ("instructions", "cycles"):
                row[target] = self.layer_cost(target, chain, f)
                out[target] += row[target]
            out["layers"].append(row)
        for target in ("instructions", "cycles"):
            out[target] += self.glue_cost(target, len(feats))
        return out

    def predict_build(self, build_dir: str | Path) -> dict:
        """Prediction for an edgekit build directory (its IR, memory plan and kernel choices)."""
        from ..manifest import load_manifest
        from ..ir.graph import Graph

        return self.predict_layers(layer_features(Graph.load(Path(build_dir)), load_manifest(build_dir)))

    def to_json(self) -> dict:
        return {"edgekit_cost_model": COST_MODEL_VERSION, "core": self.core, "key": self.key,
                "features": {k: list(v) for k, v in KIND_FEATURES.items()}, "coef": self.coef, "stats": self.stats}

    @staticmethod
    def from_json(d: dict) -> "CostModel":
        if d.get("edgekit_cost_model") != COST_MODEL_VERSION:
            raise EdgekitError("cost model file of another version; recalibrate")
        return CostModel(d["core"], d["key"], d["coef"], d.get("stats", {}))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)

    @staticmethod
    def load(path: str | Path) -> "CostModel":
        return CostModel.from_json(json.loads(Path(path).read_text()))

    def summary(self) -> str:
        s = self.stats
        if not s.get("holdout"):
            return f"cost model for {self.core}: {s.get('n_fit', '?')} calibration architectures, no held-out set"
        h = s["holdout"]
        return (f"cost model for {self.core}: fitted on {s['n_fit']} architectures ({s['n_layers']} layers), "
                f"held-out {h['n']} architectures: instructions error mean {100 * h['instructions_mean_abs']:.2f}% "
                f"max {100 * h['instructions_max_abs']:.2f}%, cycle-estimate error mean "
                f"{100 * h['cycles_mean_abs']:.2f}% max {100 * h['cycles_max_abs']:.2f}%")


def sample_layers(sample: dict) -> list[tuple[str, list[str], dict, float, float]]:
    """(name, kind chain, features, instructions, cycles) per measured layer of a sample."""
    out = []
    for layer in sample["layers"]:
        base, f = features(layer["info"])
        if base != "zero":
            f = dict(f, work=_work(base, f))
        out.append((layer["info"]["name"], chain_of(base, layer["info"]), f, layer["instructions"], layer["cycles"]))
    return out


NONNEG = False


def _lstsq(rows, y, weights, nonneg: bool | None = None) -> list[float]:
    """Weighted least squares; with ``nonneg``, features whose coefficient comes out negative
    are dropped one at a time (most negative first) and the rest refitted, so no count
    grows when a loop runs fewer times (which keeps extrapolation sane)."""
    X, Y, w = np.array(rows, dtype=np.float64), np.array(y, dtype=np.float64), np.array(weights)
    nonneg = NONNEG if nonneg is None else nonneg
    # Columns scaled to comparable magnitudes; lstsq gives the minimum-norm solution where a
    # feature never varies in the calibration set.
    norm = np.maximum(np.abs(X).max(axis=0), 1.0)
    A = (X / norm) * w[:, None]
    active = list(range(X.shape[1]))
    while True:
        c = np.zeros(X.shape[1])
        if active:
            sol, *_ = np.linalg.lstsq(A[:, active], Y * w, rcond=None)
            c[active] = sol
        neg = [i for i in active if c[i] < 0]
        if not nonneg or not neg:
            break
        active.remove(min(neg, key=lambda i: c[i]))
    return [float(v) for v in c / norm]


def fit(samples: list[dict], core: str, key: str, min_rows_extra: int = 3) -> CostModel:
    """Least squares per layer kind on per-layer measurements, weighted by 1/measured (so
    the fit minimises relative errors and small layers count as much as large ones).

    Every level of a kind chain (``conv.w4.inplace``, ``conv.w4``, ``conv``) gets its own
    coefficients when it has at least (features + ``min_rows_extra``) calibration layers;
    prediction uses the most specific one available.
    """
    coef: dict = {"instructions": {}, "cycles": {}}
    groups: dict[str, list] = {}
    n_layers = 0
    for s in samples:
        for _, chain, f, ins, cyc in sample_layers(s):
            if chain == ["zero"]:
                continue
            n_layers += 1
            for kind in chain:
                groups.setdefault(kind, []).append((f, ins, cyc))
    for kind, rows in sorted(groups.items()):
        base = kind.split(".")[0]
        n_feat = len(KIND_FEATURES[base])
        few = len(rows) < n_feat + min_rows_extra
        if few and ("." in kind or kind == "any"):
            continue  # too few to fit this variant: it falls back to its parent kind
        X = np.array([_vector(kind, f) for f, _, _ in rows])
        if few:  # a rare base kind: only its dominant loop counts, no negative coefficients
            keep = [KIND_FEATURES[base].index(n) for n in REDUCED.get(base, ()) if n in KIND_FEATURES[base]]
            mask = np.zeros(n_feat)
            mask[keep] = 1.0
            X = X * mask
        for t, target in ((1, "instructions"), (2, "cycles")):
            y = [r[t] for r in rows]
            coef[target][kind] = _lstsq(X, y, [1.0 / max(v, 1.0) for v in y], nonneg=True if few else None)
    g = [_vector("glue", {"const": 1, "layers": s["glue"]["layers"]}) for s in samples]
    for target in ("instructions", "cycles"):
        coef[target]["glue"] = _lstsq(g, [s["glue"][target] for s in samples], [1.0] * len(samples))
    return CostModel(core, key, coef, {"n_fit": len(samples), "n_layers": n_layers,
                                       "kinds": {k: len(v) for k, v in sorted(groups.items())}})


def evaluate(model: CostModel, samples: list[dict]) -> dict:
    """Relative error of the predicted totals against measured totals, per architecture."""
    errs_i, errs_c, rows = [], [], []
    for s in samples:
        layers = sample_layers(s)
        pred = model.predict_layers([(n, c, f) for n, c, f, _, _ in layers])
        pi, pc = pred["instructions"], pred["cycles"]
        ei = (pi - s["instructions"]) / s["instructions"]
        ec = (pc - s["cycles"]) / s["cycles"]
        errs_i.append(ei)
        errs_c.append(ec)
        rows.append({"arch": s["arch"], "measured_instructions": s["instructions"], "predicted_instructions":
                     round(pi), "instructions_error": ei, "measured_cycles": s["cycles"],
                     "predicted_cycles": round(pc), "cycles_error": ec})
    ai, ac = np.abs(errs_i), np.abs(errs_c)
    return {"n": len(samples), "instructions_mean_abs": float(ai.mean()) if len(ai) else None,
            "instructions_max_abs": float(ai.max()) if len(ai) else None,
            "cycles_mean_abs": float(ac.mean()) if len(ac) else None,
            "cycles_max_abs": float(ac.max()) if len(ac) else None, "rows": rows}


# ---------------------------------------------------------------------------------------
# Calibration: build and profile architectures on the core's emulated board
# ---------------------------------------------------------------------------------------
def calibration_key(core_name: str) -> str:
    """Hash of everything the instruction counts depend on besides the layer shapes."""
    from ..backends.cortexm import toolchain as tc
    from ..resources import resource_dir
    from ..targets import get_core

    from ..version import __version__

    h = hashlib.sha256()
    h.update(f"v{COST_MODEL_VERSION} edgekit {__version__}".encode())
    for kind in ("templates", "firmware"):
        root = resource_dir(kind)
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in (".j2", ".h", ".c", ".ld"):
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    core = get_core(core_name)
    h.update(" ".join(core.cflags).encode())
    h.update(" ".join(tc.FIRMWARE_CFLAGS).encode())
    h.update(json.dumps(core.timing, sort_keys=True).encode())
    try:
        h.update(subprocess.run([tc.arm_gcc(), "--version"], capture_output=True, text=True).stdout.encode())
    except (OSError, EdgekitError):
        pass
    pkg = Path(__file__).resolve().parents[1]
    for sub in ("backends/cortexm", "ir", "ops"):  # code generation, kernel variants, memory plan, operators
        for p in sorted((pkg / sub).rglob("*.py")):
            h.update(str(p.relative_to(pkg)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def emulated_board_for(core_name: str) -> str:
    """The QEMU board that stands in for a real board with this core."""
    from ..targets import emulated_boards

    boards = emulated_boards(core_name)
    if not boards and core_name == "cortex-m0plus":
        return "mps2-an385"  # Armv6-M code runs unchanged on its Cortex-M3 (as edgekit profile does)
    if not boards:
        raise EdgekitError(f"no emulated board carries a {core_name}; the latency model needs one")
    # Prefer the board with the most RAM (calibration architectures can be large).
    from ..targets import get_board

    return max(boards, key=lambda b: get_board(b).ram.length)


def measure_arch(arch, core_name: str, workdir: Path, seed: int = 0) -> dict:
    """Export ``arch`` with random weights, build it for the core's QEMU board, profile it."""
    import torch

    from ..api import build
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph
    from ..qat import export_qonnx
    from .space import build_model
    from .train import calibrate_activations

    board = emulated_board_for(core_name)
    model = build_model(arch)
    calibrate_activations(model, torch.randn(64, *arch.input_shape, generator=torch.Generator().manual_seed(seed)))
    onnx = export_qonnx(model, torch.zeros(1, *arch.input_shape), workdir / "model.onnx")
    res = build(onnx, core_name, board, workdir / "build")
    rep = profile(res.out_dir, count=1, write=False).to_json()
    graph = Graph.load(res.out_dir)
    infos = {i["name"]: i for i in layer_info(graph, res.manifest)}
    layers, glue = [], None
    for r in rep["layers"]:
        if r["name"] == "ek_model_run":
            glue = {"instructions": r["instructions"], "cycles": r["est_cycles"], "layers": len(infos)}
        elif r["name"] in infos:
            layers.append({"info": infos[r["name"]], "instructions": r["instructions"], "cycles": r["est_cycles"]})
        elif r["instructions"]:
            raise EdgekitError(f"profile row {r['label']} matches no IR node")
    return {"arch": arch.describe(), "arch_json": arch.to_json(), "layers": layers, "glue": glue,
            "instructions": rep["total"]["instructions"], "cycles": rep["total"]["est_cycles"],
            "macs": rep["total"]["macs"], "board": board}


def _measure_job(args):
    arch_json, core_name, seed = args
    from .space import ArchSpec

    with tempfile.TemporaryDirectory(prefix="edgekit-nas-cal-") as d:
        try:
            return measure_arch(ArchSpec.from_json(arch_json), core_name, Path(d), seed)
        except Exception as e:  # noqa: BLE001  e.g. an architecture whose accumulator could overflow
            text = (str(e).strip().splitlines() or [""])[0]
            if not isinstance(e, EdgekitError):
                text = f"internal error ({type(e).__name__}: {text})"
            return {"error": text, "arch_json": arch_json}


def calibrate(core_name: str, input_shape: tuple[int, int], n_classes: int, space=None, n_fit: int = 40,
              n_holdout: int = 12, seed: int = 0, workers: int = 1, progress=print,
              max_macs: int | None = None) -> CostModel:
    """Measure ``n_fit + n_holdout`` random architectures (at most ``max_macs`` MACs each),
    fit on the first, test on the rest."""
    from .space import SpaceConfig, random_arch

    space = space or SpaceConfig()
    rng = np.random.default_rng(seed)
    archs, seen = [], set()
    while len(archs) < n_fit + n_holdout:
        a = random_arch(rng, space, input_shape, n_classes, max_macs=max_macs)
        if a.key() not in seen:
            seen.add(a.key())
            archs.append(a)
    jobs = [(a.to_json(), core_name, seed + i) for i, a in enumerate(archs)]
    key = calibration_key(core_name)
    t0 = time.monotonic()
    results = []
    from .bars import bar

    with bar(len(jobs), f"calibrating the {core_name} latency model", unit="arch") as shown:
        lines = progress if shown.disable else None  # a bar replaces the per-architecture lines

        def done(i, r):
            results.append(r)
            _report(lines, i, len(jobs), r, t0)
            shown.set_postfix_str(("skipped" if "error" in r else r["arch"])[:50], refresh=False)
            shown.update()

        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for i, r in enumerate(pool.imap(_measure_job, jobs)):
                    done(i, r)
        else:
            for i, job in enumerate(jobs):
                done(i, _measure_job(job))
    if calibration_key(core_name) != key:
        raise EdgekitError("edgekit's kernels, code generator or compiler changed while the latency model was "
                           "being calibrated; run again")
    fit_set = [r for r in results[:n_fit] if "error" not in r]
    hold = [r for r in results[n_fit:] if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    if len(fit_set) < 3 or len(errors) > len(results) // 2:
        raise EdgekitError(f"{len(errors)} of {len(results)} calibration architectures could not be built and "
                           f"profiled (first: {errors[0] if errors else '?'}); no cost model fitted")
    model = fit(fit_set, core_name, key)
    model.stats.update({"samples": {"fit": fit_set, "holdout": hold}, "n_fit": len(fit_set), "n_requested": n_fit, "board": fit_set[0]["board"], "seed": seed,
                        "input_shape": list(input_shape), "seconds": round(time.monotonic() - t0, 1),
                        "max_macs": max_macs,
                        "failed": [r["error"] for r in results if "error" in r],
                        "fit": {k: v for k, v in evaluate(model, fit_set).items() if k != "rows"},
                        "holdout": evaluate(model, hold) if hold else None})
    return model


def _worker_init():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _report(progress, i, n, r, t0):
    if progress is None:
        return
    if "error" in r:
        progress(f"  calibration {i + 1}/{n}: skipped ({r['error'].splitlines()[0][:100]})")
    else:
        progress(f"  calibration {i + 1}/{n}: {r['instructions']:>10,} instructions  {r['arch']}  "
                 f"({time.monotonic() - t0:.0f} s)")


def cache_root() -> Path:
    """The per-user cache: ``$EDGEKIT_CACHE``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``."""
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "edgekit"


def macs_bucket(max_macs: int | None) -> int | None:
    """The MAC cap rounded up to a power of two, so that searches with similar latency budgets
    share one calibration (it covers at most twice the region a search needs)."""
    return None if not max_macs else 1 << (int(max_macs) - 1).bit_length()


def cache_path(core_name: str, key: str, space=None, max_macs: int | None = None) -> Path:
    """Where the calibration for this core and kernel set (``key``), space and MAC cap is kept."""
    sp = hashlib.sha256(json.dumps(space.to_json() if space else None, sort_keys=True).encode()).hexdigest()[:8]
    cap = f"macs{macs_bucket(max_macs)}" if max_macs else "uncapped"
    return cache_root() / "nas" / f"cost-{core_name}-{key}-{sp}-{cap}.json"


def load_or_calibrate(core_name: str, input_shape, n_classes: int, n_fit: int = 40, n_holdout: int = 12,
                      workers: int = 1, progress=print, path: str | Path | None = None, space=None,
                      max_macs: int | None = None, recalibrate: bool = False) -> CostModel:
    """The cached calibration for this core, kernel set, search space and MAC cap (see
    ``cache_path``), else a fresh one (architectures drawn from ``space``, so the fit covers
    what the search will ask about), which is then cached. ``recalibrate`` ignores the cache."""
    if path is not None:
        m = CostModel.load(path)
        if m.core != core_name:
            raise EdgekitError(f"{path}: cost model is for {m.core}, not {core_name}")
        return m
    key = calibration_key(core_name)
    cached = cache_path(core_name, key, space, max_macs)
    if cached.is_file() and not recalibrate:
        try:
            m = CostModel.load(cached)
            if m.key == key and m.stats.get("n_requested", 0) >= n_fit:
                if progress:
                    progress(f"  latency model for {core_name}: calibrated before ({m.stats.get('n_fit')} "
                             f"architectures of input {'x'.join(map(str, m.stats.get('input_shape') or []))}), "
                             f"reused from {cached} (--recalibrate to fit it afresh)")
                return m
        except (OSError, ValueError, KeyError, EdgekitError):
            pass
    cap = macs_bucket(max_macs)
    if progress:
        capped = f" of at most {cap:,} MACs" if cap else ""
        progress(f"calibrating the latency model for {core_name}: {n_fit} + {n_holdout} held-out architectures"
                 f"{capped} built and profiled on {emulated_board_for(core_name)} (once per core and kernel set; "
                 f"cached in {cached.parent})")
    m = calibrate(core_name, tuple(input_shape), n_classes, space=space, n_fit=n_fit, n_holdout=n_holdout,
                  workers=workers, progress=progress, max_macs=cap)
    m.save(cached)
    return m
