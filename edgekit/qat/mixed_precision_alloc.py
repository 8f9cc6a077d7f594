"""Per-layer weight bit widths under budgets (HAWQ-V3's integer linear program) and the
model-side flow: sensitivity, allocation, QAT fine-tuning.

The allocation picks one bit width per layer from ``bit_choices`` (x[l, j] binary, one per
layer) minimising the summed HAWQ-V2 sensitivity Omega[l, j] subject to linear budgets:
for every resource r (flash bytes, instructions, BOPs...) ``base_r + sum cost_r[l, j] x[l, j]
<= budget_r``. The costs are the caller's: edgekit.mixedprec measures them on uniform
builds (exact packed weight bytes, per-layer code bytes and per-layer instruction counts);
this module only solves. Solver: scipy.optimize.milp (HiGHS).

Everything here stays below the build layers: :func:`mixed_precision` returns the
fine-tuned model and its assignment; ``edgekit.mixedprec.run`` builds, verifies and
measures it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgekitError

BIT_CHOICES = (8, 4, 2)
_UNITS = {"flash": "flash bytes", "cycles": "cycles (the latency budget at the board's clock)", "bops": "BOPs"}


class InfeasibleBudget(EdgekitError):
    """No assignment of the offered bit widths meets the budgets."""


@dataclass
class CostTable:
    """Linear resource model of a model's layers: ``total_r = base[r] + sum_l per_layer[r][l, j]``
    for the bit width ``bit_choices[j]`` of layer l. ``fixed`` holds resources that do not
    depend on weight bits (peak RAM), checked as they are."""
    layers: list[str]
    bit_choices: tuple[int, ...]
    base: dict[str, float]
    per_layer: dict[str, np.ndarray]
    fixed: dict[str, float] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def total(self, resource: str, choice: list[int]) -> float:
        t = self.per_layer[resource]
        return float(self.base[resource] + sum(t[i, j] for i, j in enumerate(choice)))

    def to_json(self) -> dict:
        return {"layers": self.layers, "bit_choices": list(self.bit_choices), "base": self.base,
                "per_layer": {k: v.tolist() for k, v in self.per_layer.items()}, "fixed": self.fixed,
                "notes": self.notes}


@dataclass
class Allocation:
    bits: dict[str, int]            # layer -> weight bits
    choice: list[int]               # index into bit_choices per layer
    sensitivity: float              # sum of Omega over the chosen widths
    predicted: dict[str, float]     # resource -> predicted total
    budgets: dict[str, float]

    def to_json(self) -> dict:
        return {"bits": self.bits, "sensitivity": self.sensitivity, "predicted": self.predicted,
                "budgets": self.budgets}


def allocate(omega: np.ndarray, costs: CostTable, budgets: dict[str, float | None]) -> Allocation:
    """The assignment of least total sensitivity within ``budgets`` (resource -> limit; None
    or a missing resource: unbounded). Raises :class:`InfeasibleBudget` with what the
    smallest assignment needs when no assignment fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_l, n_b = omega.shape
    if n_l != len(costs.layers) or n_b != len(costs.bit_choices):
        raise ValueError("sensitivity table and cost table disagree on layers or bit choices")
    budgets = {k: v for k, v in budgets.items() if v is not None}
    for r, v in budgets.items():
        if r in costs.fixed and costs.fixed[r] > v:
            raise InfeasibleBudget(f"the {r} budget ({v:,.0f}) is below what the model needs at any weight width "
                                   f"({costs.fixed[r]:,.0f}: {r} does not depend on the weight bits); raise "
                                   f"--max-{r.replace('_', '-')} or pick a smaller model")
        if r not in costs.fixed and r not in costs.per_layer:
            raise ValueError(f"no costs for the resource '{r}'")
    rows, ub = [], []
    one_per_layer = np.zeros((n_l, n_l * n_b))
    for i in range(n_l):
        one_per_layer[i, i * n_b:(i + 1) * n_b] = 1
    cons = [LinearConstraint(one_per_layer, 1, 1)]
    for r, v in budgets.items():
        if r in costs.per_layer:
            rows.append(costs.per_layer[r].reshape(-1))
            ub.append(v - costs.base[r])
    if rows:
        cons.append(LinearConstraint(np.array(rows), -np.inf, np.array(ub)))
    res = milp(c=omega.reshape(-1), constraints=cons, integrality=np.ones(n_l * n_b), bounds=Bounds(0, 1))
    if res.status != 0 or res.x is None:
        least = {r: costs.base[r] + float(costs.per_layer[r].min(axis=1).sum())
                 for r in budgets if r in costs.per_layer}
        need = ", ".join(f"{_UNITS.get(r, r)} {least[r]:,.0f} (budget {budgets[r]:,.0f})" for r in least)
        raise InfeasibleBudget(f"no assignment of {'/'.join(map(str, costs.bit_choices))}-bit weights meets the "
                               f"budgets together; at its cheapest each resource needs {need}; raise a budget")
    x = np.round(res.x).reshape(n_l, n_b)
    choice = [int(np.argmax(x[i])) for i in range(n_l)]
    return _allocation(omega, costs, choice, budgets)


def _allocation(omega, costs: CostTable, choice: list[int], budgets: dict) -> Allocation:
    return Allocation({name: int(costs.bit_choices[j]) for name, j in zip(costs.layers, choice)}, choice,
                      float(sum(omega[i, j] for i, j in enumerate(choice))),
                      {r: costs.total(r, choice) for r in costs.per_layer}, dict(budgets))


def uniform(omega: np.ndarray, costs: CostTable, bits: int) -> Allocation:
    j = list(costs.bit_choices).index(bits)
    return _allocation(omega, costs, [j] * len(costs.layers), {})


def random_assignment(omega: np.ndarray, costs: CostTable, budgets: dict, rng: np.random.Generator,
                      tries: int = 10000) -> Allocation:
    """A uniformly drawn assignment that meets ``budgets`` (the baseline HAWQ must beat)."""
    budgets = {k: v for k, v in budgets.items() if v is not None and k in costs.per_layer}
    n_l, n_b = omega.shape
    for _ in range(tries):
        choice = [int(v) for v in rng.integers(0, n_b, n_l)]
        if all(costs.total(r, choice) <= v for r, v in budgets.items()):
            return _allocation(omega, costs, choice, budgets)
    raise InfeasibleBudget("no random assignment within the budgets was drawn")


def pareto_sweep(omega: np.ndarray, costs: CostTable, resource: str, budgets: dict | None = None,
                 steps: int = 8) -> list[Allocation]:
    """ILP solutions for ``steps`` budgets on ``resource`` from the smallest to the largest
    assignment (other budgets held), reduced to the Pareto set of (resource, sensitivity)."""
    budgets = dict(budgets or {})
    t = costs.per_layer[resource]
    lo = costs.base[resource] + float(t.min(axis=1).sum())
    hi = costs.base[resource] + float(t.max(axis=1).sum())
    found: dict[tuple, Allocation] = {}
    for b in np.linspace(lo, hi, steps):
        try:
            a = allocate(omega, costs, {**budgets, resource: float(b)})
        except InfeasibleBudget:
            continue
        found.setdefault(tuple(a.choice), a)
    pts = sorted(found.values(), key=lambda a: (a.predicted[resource], a.sensitivity))
    front, best = [], np.inf
    for a in pts:
        if a.sensitivity < best - 1e-18:
            front.append(a)
            best = a.sensitivity
    return front


# ---------------------------------------------------------------------------------------
# The model-side flow
# ---------------------------------------------------------------------------------------
@dataclass
class MixedPrecisionResult:
    model: object                   # the fine-tuned Brevitas model with the chosen widths
    allocation: Allocation
    traces: list                    # hessian.LayerTrace per layer
    omega: np.ndarray
    layer_names: list[str]          # torch module names, in execution order
    seconds: dict


def apply_bits(model, bits: list[int], example=None) -> None:
    """Set the weight bit width of every quantized layer (execution order)."""
    from .hessian import quant_layers, set_weight_bits

    layers = quant_layers(model, example)
    if len(layers) != len(bits):
        raise ValueError(f"{len(bits)} bit widths for {len(layers)} quantized layers")
    for (_, m), b in zip(layers, bits):
        set_weight_bits(m, b)


def mixed_precision(model, train_data: tuple, budgets: dict, costs: CostTable, epochs: int = 3,
                    probes: int = 16, calibration: int = 512, lr: float = 1e-3, batch: int = 64, seed: int = 0,
                    val_data: tuple | None = None, progress: bool = False, omega: np.ndarray | None = None,
                    traces: list | None = None) -> MixedPrecisionResult:
    """Sensitivity (Hutchinson, on ``calibration`` training samples), ILP allocation under
    ``budgets`` with ``costs``, then QAT fine-tuning for ``epochs`` with that assignment.

    ``model``: a Brevitas model (typically an 8-bit QAT or float-initialised checkpoint;
    its weights are the starting point of the fine-tuning and it is modified in place).
    ``train_data``: (x, y) numpy arrays. ``costs.layers`` must list the model's quantized
    layers in execution order. Pass ``omega``/``traces`` to reuse a sensitivity table.
    """
    import torch

    from .hessian import hutchinson_traces, quant_layers, sensitivities
    from .train import train

    x, y = train_data
    t0 = time.monotonic()
    xt = torch.as_tensor(np.asarray(x[:1]))
    layers = quant_layers(model, xt)
    if len(layers) != len(costs.layers):
        raise EdgekitError(f"the cost table has {len(costs.layers)} layers, the model {len(layers)} quantized ones")
    if omega is None:
        idx = np.random.default_rng(seed).permutation(len(x))[:calibration]
        traces = hutchinson_traces(model, torch.as_tensor(x[idx]), torch.as_tensor(y[idx]), probes=probes,
                                   seed=seed, layers=layers)
        omega = sensitivities(layers, traces, costs.bit_choices)
    t1 = time.monotonic()
    alloc = allocate(omega, costs, budgets)
    t2 = time.monotonic()
    apply_bits(model, [alloc.bits[n] for n in costs.layers], xt)
    if epochs > 0:
        xv, yv = val_data if val_data is not None else (None, None)
        train(model, x, y, epochs=epochs, lr=lr, batch=batch, seed=seed, x_val=xv, y_val=yv, progress=progress,
              label="fine-tune")
    model.eval()
    return MixedPrecisionResult(model, alloc, traces or [], omega, [n for n, _ in layers],
                                {"sensitivity": t1 - t0, "ilp": t2 - t1, "fine_tune": time.monotonic() - t2})
