"""``edgekit mixed-precision``: Hessian-aware per-layer weight widths under budgets, end to end.

1. the zoo model (8-bit, power-of-two) with calibrated random weights is built at uniform
   8/4/2-bit weights and profiled: the per-layer cost table (:mod:`.costs`); budgets no
   assignment can meet stop here (one error line);
2. QAT at 8 bits for ``pretrain_epochs`` (or a given checkpoint): the starting point;
3. per-layer Hessian traces (Hutchinson) and HAWQ-V2 sensitivities on a calibration subset;
4. the ILP (scipy milp / HiGHS) under the budgets, and the Pareto set over flash budgets;
5. QAT fine-tuning of the checkpoint with the chosen widths for ``epochs``, export, build
   for the board, verify bit-exactly on the emulated core, profile; the **measured** flash,
   RAM and latency are checked against the budgets. When a measurement is over (a few
   bytes of code the per-layer table cannot foresee), that budget is tightened by the
   overshoot and the ILP solved again (at most ``retries`` times).

Files in ``out_dir``: ``assignment.json`` (layer -> bits, with node names), ``model.onnx``
(QONNX), ``build/`` (the board build; ``build-<qemu board>/`` too when the board is not
emulated), ``report.json``, ``report.txt``, ``accuracy_flash.svg`` and ``pareto.json``.
"""
from __future__ import annotations

import copy
import filecmp
import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import EdgekitError

DATASETS = ("har", "basicmotions", "digits")


# ---------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------
def load_data(name: str, train_subset: int | None = None, seed: int = 0):
    """Train/validation/test splits (the architecture search's for har and basicmotions);
    ``train_subset`` keeps that many random training samples."""
    from ..nas.datasets import NasData, load

    if name in ("har", "basicmotions"):
        return load(name, train_subset, seed)
    if name != "digits":
        raise EdgekitError(f"unknown data set '{name}'; available: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 - 0.5) * 2.0  # 8x8 grey levels 0..16 -> [-1, 1]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    n_test, n_val = len(x) // 5, len(x) // 10
    te, va, tr = idx[:n_test], idx[n_test:n_test + n_val], idx[n_test + n_val:]
    if train_subset:
        tr = tr[:train_subset]
    return NasData("digits", x[tr], y[tr], x[va], y[va], x[te], y[te], tuple(str(i) for i in range(10)),
                   f"scikit-learn digits (8x8): train {len(tr)}, validation {len(va)}, test {len(te)}")


def make_model(name: str, data, seed: int = 0, preset: str = "int8-pow2"):
    """A zoo model sized for the data set's windows and classes, activations calibrated;
    ``preset`` names its quantizers (``qat.presets``)."""
    import torch

    from ..nas.train import calibrate_activations
    from ..qat.zoo import ZOO

    key = name[4:] if name.startswith("zoo:") else name
    if key not in ZOO:
        raise EdgekitError(f"unknown zoo model '{name}'; available: {', '.join('zoo:' + k for k in ZOO)}")
    cls = ZOO[key]
    params = inspect.signature(cls).parameters
    kw = {"preset": preset}
    if "n_classes" in params:
        kw["n_classes"] = data.n_classes
    if "n_in" in params:
        kw["n_in"] = data.input_shape[-1]
    torch.manual_seed(seed)
    model = cls(**kw)
    model.input_shape = tuple(data.input_shape)
    try:
        with torch.no_grad():
            model(torch.as_tensor(data.x_train[:2]))
    except Exception as e:  # noqa: BLE001  a shape mismatch between the architecture and the data
        raise EdgekitError(f"zoo:{key} does not take {data.name} samples of shape {tuple(data.input_shape)} "
                           f"({str(e).splitlines()[0][:120]}); pick a zoo model made for that input") from None
    idx = np.random.default_rng(seed).permutation(len(data.x_train))[:256]
    calibrate_activations(model, torch.as_tensor(data.x_train[idx]))
    return model


# ---------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------
def ilp_budgets(budgets: dict, clock_hz: float) -> dict:
    """CLI budgets (flash/ram bytes, latency ms, instructions, bops) in the cost table's units."""
    out = {"flash": budgets.get("flash"), "ram": budgets.get("ram"), "instructions": budgets.get("instructions"),
           "bops": budgets.get("bops")}
    if budgets.get("latency_ms") is not None:
        out["cycles"] = budgets["latency_ms"] * clock_hz / 1e3
    return {k: v for k, v in out.items() if v is not None}


def over_budget(measured: dict, budgets: dict) -> dict:
    """resource -> measured - budget, for each measured resource above its budget."""
    keys = {"flash": "flash_bytes", "ram": "ram_bytes", "latency_ms": "latency_ms", "instructions": "instructions"}
    return {k: measured[m] - budgets[k] for k, m in keys.items()
            if budgets.get(k) is not None and measured.get(m) is not None and measured[m] > budgets[k]}


# ---------------------------------------------------------------------------------------
# Build, verify, measure one model
# ---------------------------------------------------------------------------------------
def build_and_check(onnx: Path, target: str, board: str, out: Path, data, kernels: str | None = None,
                    say=print) -> dict:
    """Build for the board (and its emulated stand-in), verify bit-exactly on the emulated
    core (256 test samples and 64 generated vectors), profile, integer test accuracy."""
    from ..api import build, verify
    from ..backends.cortexm.profile import profile
    from ..nas.cost import emulated_board_for
    from ..nas.finalize import integer_accuracy
    from ..targets import get_board

    bd = out / "build"
    if bd.exists():
        shutil.rmtree(bd)
    res = build(onnx, target, board, bd, kernels=kernels)
    m = res.manifest
    r = {"build_dir": str(bd), "flash_bytes": m.memory["flash_bytes"], "ram_bytes": m.memory["ram_bytes"],
         "weight_bytes": m.weight_bytes, "arena_bytes": m.arena_bytes, "kernel_variants": m.kernel_variants}
    if get_board(board).emulated:
        emu_dir, emu = bd, board
    else:
        emu = emulated_board_for(target)
        emu_dir = out / f"build-{emu}"
        if emu_dir.exists():
            shutil.rmtree(emu_dir)
        build(onnx, target, emu, emu_dir, kernels=kernels)
        if not filecmp.cmp(emu_dir / "src" / "model.c", bd / "src" / "model.c", shallow=False):
            raise EdgekitError(f"the C generated for {emu} differs from the {board} build; cannot verify it there")
    say(f"  verifying on {emu}")
    n = min(256, len(data.x_test))
    v_real = verify(emu_dir, inputs=data.x_test[:n])
    v_gen = verify(emu_dir, count=64)
    (out / "verify.txt").write_text(v_real.table() + "\n\n" + v_gen.table() + "\n")
    r["verified_on"] = emu
    r["bit_exact"] = bool(v_real.ok and v_gen.ok)
    r["verify"] = [{"stage": s.stage, "mismatches": s.mismatches, "elements": s.elements}
                   for s in v_real.stages + v_gen.stages]
    p = profile(bd, count=2).to_json()
    r.update(instructions=p["total"]["instructions"], cycles=p["total"]["est_cycles"],
             latency_ms=p["total"]["est_ms"], counted_on=p["counted_on"], clock_hz=p["clock_hz"])
    r["int_test_accuracy"] = integer_accuracy(bd, data.x_test, data.y_test)
    return r


# ---------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------
def pretrain(model, data, epochs: int, seed: int, say=print):
    """QAT at uniform 8 bits: the checkpoint every assignment is fine-tuned from."""
    from ..qat import train

    if epochs > 0:
        say(f"  QAT at 8 bits for {epochs} epochs (the starting checkpoint)")
        train(model, data.x_train, data.y_train, epochs=epochs, lr=2e-3, seed=seed, x_val=data.x_val,
              y_val=data.y_val, progress=False)
    return model.eval()


def sensitivity(model, data, costs, probes: int, calibration: int, seed: int):
    import torch

    from ..qat.hessian import hutchinson_traces, quant_layers, sensitivities

    layers = quant_layers(model, torch.as_tensor(data.x_train[:1]))
    idx = np.random.default_rng(seed).permutation(len(data.x_train))[:calibration]
    traces = hutchinson_traces(model, torch.as_tensor(data.x_train[idx]), torch.as_tensor(data.y_train[idx]),
                               probes=probes, seed=seed, layers=layers)
    return traces, sensitivities(layers, traces, costs.bit_choices)


def act_sensitivity(model, data, costs, probes: int, calibration: int, seed: int):
    """Activation traces and sensitivities (None, None when the table has no activation rows)."""
    import torch

    from ..qat.hessian import act_layers, activation_traces

    if not costs.act_layers:
        return None, None
    idx = np.random.default_rng(seed).permutation(len(data.x_train))[:calibration]
    return activation_traces(model, torch.as_tensor(data.x_train[idx]), torch.as_tensor(data.y_train[idx]),
                             act_layers(model, torch.as_tensor(data.x_train[:1])), costs.act_choices, probes=probes,
                             seed=seed)


def fine_tune(checkpoint, bits: list[int], data, epochs: int, seed: int, lr: float = 1e-3,
              act_bits: list[int] | None = None, distill: tuple[float, float] | None = None):
    """A copy of the checkpoint with ``bits`` per layer (and ``act_bits`` per activation
    quantizer), QAT-fine-tuned for ``epochs``; with ``distill = (alpha, temperature)`` by
    knowledge distillation from the checkpoint itself (``qat.train.distillation_loss``)."""
    import torch

    from ..qat import train
    from ..qat.mixed_precision_alloc import apply_act_bits, apply_bits

    model = copy.deepcopy(checkpoint)
    apply_bits(model, bits, torch.as_tensor(data.x_train[:1]))
    if act_bits:
        apply_act_bits(model, act_bits, torch.as_tensor(data.x_train[:1]))
    if epochs > 0:
        kd = {"teacher": checkpoint, "distill_alpha": distill[0], "temperature": distill[1]} if distill else {}
        train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, seed=seed, progress=False, **kd)
    return model.eval()


def run(model_name: str, dataset: str, board: str, out_dir: str | Path, budgets: dict, target: str | None = None,
        epochs: int = 3, pretrain_epochs: int = 6, probes: int = 16, calibration: int = 512,
        kernels: str | None = None, seed: int = 0, retries: int = 3, pareto_steps: int = 8,
        checkpoint: str | Path | None = None, train_subset: int | None = None, say=print,
        act_choices: tuple[int, ...] = (), bit_choices: tuple[int, ...] = (8, 4, 2),
        preset: str = "int8-pow2") -> dict:
    import torch

    from ..qat import export_qonnx
    from ..qat.mixed_precision_alloc import allocate, pareto_sweep
    from ..targets import get_board
    from .costs import cheapest_scales, for_scales, measure_costs
    from .report import write_report

    t_start = time.monotonic()
    b = get_board(board)
    target = target or b.core
    if target != b.core:
        raise EdgekitError(f"board '{b.name}' has a {b.core}, not a {target}")
    out = Path(out_dir)
    data = load_data(dataset, train_subset, seed)
    model = make_model(model_name, data, seed, preset)
    example = torch.as_tensor(data.x_train[:1])
    times = {}

    t = time.monotonic()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    units = ilp_budgets(budgets, b.clock_hz)
    try:
        costs = measure_costs(model, example, target, board, out / "costs", bit_choices=bit_choices,
                              kernels=kernels, say=say, act_choices=act_choices)
        # budgets no assignment meets stop here, before any training (and leave no output behind)
        allocate(np.zeros((len(costs.layers), len(costs.bit_choices))), cheapest_scales(costs), units)
    except EdgekitError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    times["cost_table_s"] = time.monotonic() - t

    t = time.monotonic()
    if checkpoint:
        try:
            model.load_state_dict(torch.load(checkpoint, weights_only=True))
        except (OSError, RuntimeError, ValueError) as e:
            raise EdgekitError(f"{checkpoint}: not a state dict of zoo:{model_name.removeprefix('zoo:')} "
                               f"({str(e).splitlines()[0][:120]})") from None
    else:
        pretrain(model, data, pretrain_epochs, seed, say)
        torch.save(model.state_dict(), out / "checkpoint-w8.pt")
    from ..qat import evaluate

    acc8 = evaluate(model, data.x_test, data.y_test)
    times["pretrain_s"] = time.monotonic() - t
    costs = for_scales(costs, model, example)  # per-channel scales: the checkpoint's, width by width

    say(f"  Hessian traces: {probes} Rademacher probes on {min(calibration, len(data.x_train))} training samples")
    t = time.monotonic()
    traces, omega = sensitivity(model, data, costs, probes, calibration, seed)
    act_traces, omega_act = act_sensitivity(model, data, costs, probes, calibration, seed)
    times["sensitivity_s"] = time.monotonic() - t

    t = time.monotonic()
    pareto = pareto_sweep(omega, costs, "flash", {k: v for k, v in units.items() if k != "flash"}, pareto_steps,
                          omega_act)
    times["pareto_s"] = time.monotonic() - t

    attempts, eff, final = [], dict(units), None
    for attempt in range(retries + 1):
        alloc = allocate(omega, costs, eff, omega_act)
        bits = [alloc.bits[n] for n in costs.layers]
        acts = "".join(f", {n}=a{v}" for n, v in alloc.act_bits.items())
        say(f"  assignment {attempt + 1}: {', '.join(f'{n}={v}' for n, v in alloc.bits.items())}{acts} (predicted flash "
            f"{alloc.predicted['flash']:,.0f} B, {alloc.predicted['instructions']:,.0f} instructions); "
            f"fine-tuning {epochs} epochs")
        t = time.monotonic()
        tuned = fine_tune(model, bits, data, epochs, seed, act_bits=[alloc.act_bits[n] for n in costs.act_layers])
        times[f"fine_tune_{attempt + 1}_s"] = time.monotonic() - t
        onnx = export_qonnx(tuned, example, out / "model.onnx")
        t = time.monotonic()
        meas = build_and_check(onnx, target, board, out, data, kernels, say)
        times[f"build_verify_{attempt + 1}_s"] = time.monotonic() - t
        over = over_budget(meas, budgets)
        attempts.append({"allocation": alloc.to_json(), "measured": meas, "over_budget": over,
                         "effective_budgets": dict(eff)})
        if costs.per_layer_equal_scales:  # fine-tuning may move a channel's scale across a power of two
            tuned_costs = for_scales(costs, tuned, example)
            attempts[-1]["predicted_for_tuned_scales"] = {
                r: tuned_costs.total(r, alloc.choice, alloc.act_choice) for r in ("flash", "instructions", "cycles")}
        if not meas["bit_exact"]:
            raise EdgekitError(f"the mixed-precision model is not bit-exact on {meas['verified_on']} "
                               f"(see {out / 'verify.txt'})")
        if not over:
            final = attempts[-1]
            break
        for k, excess in over.items():  # tighten by the overshoot (in the ILP's units) and solve again
            r = "cycles" if k == "latency_ms" else k
            if r == "ram":
                raise EdgekitError(f"measured RAM {meas['ram_bytes']:,} B is over the budget {budgets['ram']:,} B; "
                                   "RAM does not depend on the weight widths: raise --max-ram")
            step = excess * b.clock_hz / 1e3 if k == "latency_ms" else excess
            eff[r] = eff[r] - step - (1 if r != "cycles" else 0)
        say(f"  measured over budget ({', '.join(f'{k} +{v:,.3g}' for k, v in over.items())}); solving again")
    times["total_s"] = time.monotonic() - t_start
    summary = {
        "edgekit_mixed_precision": 1, "model": model_name, "dataset": dataset, "dataset_description":
        data.description, "board": b.name, "target": target, "kernels": kernels or "optimized",
        "budgets": budgets, "preset": preset, "epochs": epochs, "pretrain_epochs": 0 if checkpoint else pretrain_epochs,
        "checkpoint": str(checkpoint) if checkpoint else str(out / "checkpoint-w8.pt"),
        "uniform8_test_accuracy": acc8,
        "layers": [{"module": n, "node": node, "params": t.n_params, "trace": t.trace_mean,
                    "trace_stderr": t.trace_stderr,
                    "sensitivity": {str(b): float(omega[i, j]) for j, b in enumerate(costs.bit_choices)
                                    if costs.offered()[i, j]}}
                   for i, (n, node, t) in enumerate(zip(costs.layers, costs.notes["nodes"], traces))],
        "bit_choices": list(bit_choices), "binary": costs.notes.get("binary", {}),
        "activations": [{"module": n, "elements": t.n_params, "trace": t.trace_mean, "trace_stderr": t.trace_stderr,
                         "sensitivity": dict(zip(map(str, costs.act_choices), omega_act[i].tolist()))}
                        for i, (n, t) in enumerate(zip(costs.act_layers, act_traces or []))],
        "probes": probes, "calibration_samples": min(calibration, len(data.x_train)),
        "cost_table": costs.to_json(),
        "pareto": [a.to_json() for a in pareto],
        "attempts": attempts, "ok": final is not None,
        "result": final, "seconds": {k: round(v, 1) for k, v in times.items()},
    }
    write_report(summary, out)
    return summary
