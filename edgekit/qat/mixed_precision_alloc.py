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
    depend on the bit widths (peak RAM), checked as they are.

    Activation widths, when the model offers them (``act_layers``, one row per activation
    quantizer, widths ``act_choices``), add ``act_per_layer[r][a, k]`` to a resource. BOPs
    are bilinear (MACs x weight bits x input bits): a weight layer l whose input is activation
    row ``act_input[l]`` costs ``macs[l] * w * a`` BOPs (linearised exactly in the ILP by
    product variables), the others ``per_layer["bops"]`` as measured.

    ``allowed[l, j]`` (default: all True) says whether layer l may take ``bit_choices[j]``:
    1-bit (binary) weights only where a binary kernel runs the layer (edgekit.mixedprec.costs)."""
    layers: list[str]
    bit_choices: tuple[int, ...]
    base: dict[str, float]
    per_layer: dict[str, np.ndarray]
    fixed: dict[str, float] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    act_layers: list[str] = field(default_factory=list)
    act_choices: tuple[int, ...] = ()
    act_per_layer: dict[str, np.ndarray] = field(default_factory=dict)
    act_input: list[int | None] = field(default_factory=list)  # per weight layer: the act row feeding it
    macs: list[float] = field(default_factory=list)            # per weight layer
    allowed: np.ndarray | None = None                          # (layers, bit_choices) bool
    # per-channel weight scales: the layers' costs when their channels' scales coincide (one
    # shift instead of per-channel records; edgekit.mixedprec.costs.for_scales picks them)
    per_layer_equal_scales: dict[str, np.ndarray] = field(default_factory=dict)

    def offered(self) -> np.ndarray:
        """The (layers, bit_choices) mask of widths each layer may take."""
        if self.allowed is None:
            return np.ones((len(self.layers), len(self.bit_choices)), bool)
        return np.asarray(self.allowed, bool)

    def extreme(self, resource: str, pick) -> float:
        """The resource's total when every layer takes its cheapest (``pick=np.min``) or
        dearest (``np.max``) offered width (activations at their widest)."""
        t = np.where(self.offered(), self.per_layer[resource], np.nan)
        return float(self.base[resource]) + float(sum(pick(row[~np.isnan(row)]) for row in t))

    def _fed(self, i: int) -> int | None:
        return self.act_input[i] if self.act_layers and i < len(self.act_input) else None

    def total(self, resource: str, choice: list[int], act_choice: list[int] | None = None) -> float:
        """The resource's total for weight widths ``choice`` (indices into ``bit_choices``) and
        activation widths ``act_choice`` (indices into ``act_choices``; default the widest)."""
        t = self.per_layer[resource]
        act_choice = act_choice if act_choice is not None else [0] * len(self.act_layers)
        total = float(self.base[resource])
        for i, j in enumerate(choice):
            a = self._fed(i)
            if resource == "bops" and a is not None:
                total += self.macs[i] * self.bit_choices[j] * self.act_choices[act_choice[a]]
            else:
                total += float(t[i, j])
        if resource in self.act_per_layer:
            total += float(sum(self.act_per_layer[resource][a, k] for a, k in enumerate(act_choice)))
        return total

    def to_json(self) -> dict:
        d = {"layers": self.layers, "bit_choices": list(self.bit_choices), "base": self.base,
             "per_layer": {k: v.tolist() for k, v in self.per_layer.items()}, "fixed": self.fixed,
             "notes": self.notes}
        if self.allowed is not None:
            d["allowed"] = self.offered().tolist()
        if self.per_layer_equal_scales:
            d["per_layer_equal_scales"] = {k: v.tolist() for k, v in self.per_layer_equal_scales.items()}
        if self.act_layers:
            d.update(act_layers=self.act_layers, act_choices=list(self.act_choices),
                     act_per_layer={k: v.tolist() for k, v in self.act_per_layer.items()},
                     act_input=self.act_input, macs=self.macs)
        return d


@dataclass
class Allocation:
    bits: dict[str, int]            # layer -> weight bits
    choice: list[int]               # index into bit_choices per layer
    sensitivity: float              # sum of Omega over the chosen widths
    predicted: dict[str, float]     # resource -> predicted total
    budgets: dict[str, float]
    act_bits: dict[str, int] = field(default_factory=dict)   # activation quantizer -> bits
    act_choice: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        d = {"bits": self.bits, "sensitivity": self.sensitivity, "predicted": self.predicted, "budgets": self.budgets}
        if self.act_bits:
            d["act_bits"] = self.act_bits
        return d


def allocate(omega: np.ndarray, costs: CostTable, budgets: dict[str, float | None],
             omega_act: np.ndarray | None = None) -> Allocation:
    """The assignment of least total sensitivity within ``budgets`` (resource -> limit; None
    or a missing resource: unbounded). Raises :class:`InfeasibleBudget` with what the
    smallest assignment needs when no assignment fits. With activation rows in ``costs``,
    ``omega_act[a, k]`` is the sensitivity of activation a at ``act_choices[k]`` (zeros when
    not given) and the activation widths are chosen together with the weights'."""
    n_l, n_b = omega.shape
    if n_l != len(costs.layers) or n_b != len(costs.bit_choices):
        raise ValueError("sensitivity table and cost table disagree on layers or bit choices")
    if costs.act_layers:
        omega_act = np.zeros((len(costs.act_layers), len(costs.act_choices))) if omega_act is None else omega_act
        if omega_act.shape != (len(costs.act_layers), len(costs.act_choices)):
            raise ValueError("activation sensitivity table and cost table disagree")
        return _allocate_joint(omega, omega_act, costs, budgets)
    from scipy.optimize import Bounds, LinearConstraint, milp

    budgets = _check_budgets(costs, budgets, "weight width", "the weight bits")
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
    res = milp(c=omega.reshape(-1), constraints=cons, integrality=np.ones(n_l * n_b),
               bounds=Bounds(0, costs.offered().reshape(-1).astype(float)))
    if res.status != 0 or res.x is None:
        least = {r: costs.extreme(r, np.min) for r in budgets if r in costs.per_layer}
        need = ", ".join(f"{_UNITS.get(r, r)} {least[r]:,.0f} (budget {budgets[r]:,.0f})" for r in least)
        raise InfeasibleBudget(f"no assignment of {'/'.join(map(str, costs.bit_choices))}-bit weights meets the "
                               f"budgets together; at its cheapest each resource needs {need}; raise a budget")
    x = np.round(res.x).reshape(n_l, n_b)
    choice = [int(np.argmax(x[i])) for i in range(n_l)]
    return _allocation(omega, costs, choice, budgets)


def _check_budgets(costs: CostTable, budgets: dict, width: str = "bit width", chosen: str = "the bit widths") -> dict:
    """The given budgets (None dropped), each one the model can meet at some choice of ``width``."""
    budgets = {k: v for k, v in budgets.items() if v is not None}
    for r, v in budgets.items():
        if r in costs.fixed and costs.fixed[r] > v:
            raise InfeasibleBudget(f"the {r} budget ({v:,.0f}) is below what the model needs at any {width} "
                                   f"({costs.fixed[r]:,.0f}: {r} does not depend on {chosen}); raise "
                                   f"--max-{r.replace('_', '-')} or pick a smaller model")
        if r not in costs.fixed and r not in costs.per_layer:
            raise ValueError(f"no costs for the resource '{r}'")
    return budgets


def _allocate_joint(omega: np.ndarray, omega_act: np.ndarray, costs: CostTable, budgets: dict) -> Allocation:
    """Weights and activations together: x[l, j] (weight widths), y[a, k] (activation widths)
    and, for every weight layer fed by an activation row, z[l, j, k] = x[l, j] * y[a, k]
    (z <= x, z <= y, z >= x + y - 1: exact for binaries) carrying its bilinear BOPs."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    budgets = _check_budgets(costs, budgets)
    n_l, n_b = omega.shape
    n_a, n_k = omega_act.shape
    fed = [(i, costs._fed(i)) for i in range(n_l) if costs._fed(i) is not None]
    nx, ny, nz = n_l * n_b, n_a * n_k, len(fed) * n_b * n_k
    n = nx + ny + nz
    xi = lambda i, j: i * n_b + j  # noqa: E731
    yi = lambda a, k: nx + a * n_k + k  # noqa: E731
    zi = lambda f, j, k: nx + ny + (f * n_b + j) * n_k + k  # noqa: E731
    rows, lo, hi = [], [], []

    def add(coef: dict, low, high):
        r = np.zeros(n)
        for c, v in coef.items():
            r[c] += v
        rows.append(r)
        lo.append(low)
        hi.append(high)

    for i in range(n_l):
        add({xi(i, j): 1 for j in range(n_b)}, 1, 1)
    for a in range(n_a):
        add({yi(a, k): 1 for k in range(n_k)}, 1, 1)
    for f, (i, a) in enumerate(fed):
        for j in range(n_b):
            for k in range(n_k):
                add({zi(f, j, k): 1, xi(i, j): -1}, -np.inf, 0)
                add({zi(f, j, k): 1, yi(a, k): -1}, -np.inf, 0)
                add({zi(f, j, k): 1, xi(i, j): -1, yi(a, k): -1}, -1, np.inf)
    fed_rows = {i for i, _ in fed}
    for r, v in budgets.items():
        if r not in costs.per_layer:
            continue
        coef: dict[int, float] = {}
        for i in range(n_l):
            for j in range(n_b):
                if not (r == "bops" and i in fed_rows):
                    coef[xi(i, j)] = float(costs.per_layer[r][i, j])
        if r in costs.act_per_layer:
            for a in range(n_a):
                for k in range(n_k):
                    coef[yi(a, k)] = float(costs.act_per_layer[r][a, k])
        if r == "bops":
            for f, (i, a) in enumerate(fed):
                for j in range(n_b):
                    for k in range(n_k):
                        coef[zi(f, j, k)] = costs.macs[i] * costs.bit_choices[j] * costs.act_choices[k]
        add(coef, -np.inf, v - costs.base[r])
    c = np.concatenate([omega.reshape(-1), omega_act.reshape(-1), np.zeros(nz)])
    upper = np.concatenate([costs.offered().reshape(-1).astype(float), np.ones(ny + nz)])
    res = milp(c=c, constraints=[LinearConstraint(np.array(rows), np.array(lo), np.array(hi))],
               integrality=np.ones(n), bounds=Bounds(0, upper))
    if res.status != 0 or res.x is None:
        raise InfeasibleBudget(f"no assignment of {'/'.join(map(str, costs.bit_choices))}-bit weights and "
                               f"{'/'.join(map(str, costs.act_choices))}-bit activations meets the budgets "
                               f"({', '.join(f'{r} {v:,.0f}' for r, v in budgets.items())}); raise a budget")
    x = np.round(res.x)
    choice = [int(np.argmax(x[i * n_b:(i + 1) * n_b])) for i in range(n_l)]
    act_choice = [int(np.argmax(x[nx + a * n_k:nx + (a + 1) * n_k])) for a in range(n_a)]
    return _allocation(omega, costs, choice, budgets, omega_act, act_choice)


def _allocation(omega, costs: CostTable, choice: list[int], budgets: dict, omega_act=None,
                act_choice: list[int] | None = None) -> Allocation:
    act_choice = act_choice if act_choice is not None else [0] * len(costs.act_layers)
    sens = float(sum(omega[i, j] for i, j in enumerate(choice)))
    if omega_act is not None:
        sens += float(sum(omega_act[a, k] for a, k in enumerate(act_choice)))
    return Allocation({name: int(costs.bit_choices[j]) for name, j in zip(costs.layers, choice)}, choice, sens,
                      {r: costs.total(r, choice, act_choice) for r in costs.per_layer}, dict(budgets),
                      {name: int(costs.act_choices[k]) for name, k in zip(costs.act_layers, act_choice)},
                      act_choice)


def uniform(omega: np.ndarray, costs: CostTable, bits: int) -> Allocation:
    j = list(costs.bit_choices).index(bits)
    if not costs.offered()[:, j].all():
        raise ValueError(f"not every layer can take {bits}-bit weights")
    return _allocation(omega, costs, [j] * len(costs.layers), {})


def random_assignment(omega: np.ndarray, costs: CostTable, budgets: dict, rng: np.random.Generator,
                      tries: int = 10000) -> Allocation:
    """A uniformly drawn assignment that meets ``budgets`` (the baseline HAWQ must beat)."""
    budgets = {k: v for k, v in budgets.items() if v is not None and k in costs.per_layer}
    n_l, n_b = omega.shape
    offered = costs.offered()
    options = [np.flatnonzero(row) for row in offered]
    for _ in range(tries):
        if offered.all():  # the draws of the tables without 1-bit rows, as before
            choice = [int(v) for v in rng.integers(0, n_b, n_l)]
        else:
            choice = [int(o[rng.integers(0, len(o))]) for o in options]
        if all(costs.total(r, choice) <= v for r, v in budgets.items()):
            return _allocation(omega, costs, choice, budgets)
    raise InfeasibleBudget("no random assignment within the budgets was drawn")


def feasible_assignments(omega: np.ndarray, costs: CostTable, budgets: dict, min_total: dict | None = None,
                         limit: int = 200_000) -> list[Allocation]:
    """Every weight-width assignment that meets ``budgets`` and whose predicted totals are at
    least ``min_total`` (a band of flash below the budget, say), by enumeration, ordered by
    sensitivity. The population random baselines draw from, and what tells how many
    assignments a budget leaves to choose between."""
    import itertools

    options = [np.flatnonzero(row).tolist() for row in costs.offered()]
    count = int(np.prod([len(o) for o in options]))
    if count > limit:
        raise ValueError(f"{count:,} assignments are too many to enumerate (limit {limit:,})")
    budgets = {k: v for k, v in budgets.items() if v is not None and k in costs.per_layer}
    floors = {k: v for k, v in (min_total or {}).items() if v is not None and k in costs.per_layer}
    found = []
    for choice in itertools.product(*options):
        choice = list(choice)
        if all(costs.total(r, choice) <= v for r, v in budgets.items()) and \
                all(costs.total(r, choice) >= v for r, v in floors.items()):
            found.append(_allocation(omega, costs, choice, budgets))
    return sorted(found, key=lambda a: (a.sensitivity, a.choice))


def distinct_random_assignments(omega: np.ndarray, costs: CostTable, budgets: dict, count: int,
                                rng: np.random.Generator, min_total: dict | None = None) -> list[Allocation]:
    """``count`` different assignments drawn uniformly without replacement from
    :func:`feasible_assignments` (all of them when fewer exist), so a random baseline is not
    a few assignments repeated."""
    pool = feasible_assignments(omega, costs, budgets, min_total)
    if not pool:
        raise InfeasibleBudget("no assignment meets the budgets within the band asked for")
    picks = rng.permutation(len(pool))[:count]
    return [pool[i] for i in picks]


def pareto_sweep(omega: np.ndarray, costs: CostTable, resource: str, budgets: dict | None = None,
                 steps: int = 8, omega_act: np.ndarray | None = None) -> list[Allocation]:
    """ILP solutions for ``steps`` budgets on ``resource`` from the smallest to the largest
    assignment (other budgets held), reduced to the Pareto set of (resource, sensitivity)."""
    budgets = dict(budgets or {})
    lo, hi = costs.extreme(resource, np.min), costs.extreme(resource, np.max)
    found: dict[tuple, Allocation] = {}
    for b in np.linspace(lo, hi, steps):
        try:
            a = allocate(omega, costs, {**budgets, resource: float(b)}, omega_act)
        except InfeasibleBudget:
            continue
        found.setdefault(tuple(a.choice + a.act_choice), a)
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


def apply_act_bits(model, bits: list[int], example=None) -> None:
    """Set the width of every activation quantizer (``hessian.act_layers``, execution order),
    keeping each one's calibrated range."""
    from .hessian import act_layers, set_act_bits

    acts = act_layers(model, example)
    if len(acts) != len(bits):
        raise ValueError(f"{len(bits)} activation widths for {len(acts)} activation quantizers")
    for (_, m), b in zip(acts, bits):
        set_act_bits(m, b)


def mixed_precision(model, train_data: tuple, budgets: dict, costs: CostTable, epochs: int = 3,
                    probes: int = 16, calibration: int = 512, lr: float = 1e-3, batch: int = 64, seed: int = 0,
                    val_data: tuple | None = None, progress: bool = False, omega: np.ndarray | None = None,
                    traces: list | None = None) -> MixedPrecisionResult:
    """Sensitivity (Hutchinson, on ``calibration`` training samples), ILP allocation under
    ``budgets`` with ``costs``, then QAT fine-tuning for ``epochs`` with that assignment.

    ``model``: a Brevitas model (typically an 8-bit QAT or float-initialised checkpoint;
    its weights are the starting point of the fine-tuning and it is modified in place).
    ``train_data``: (x, y) numpy arrays. ``costs.layers`` must list the model's quantized
    layers in execution order. Pass ``omega``/``traces`` to reuse a sensitivity table. When
    ``costs`` has activation rows (``measure_costs(..., act_choices=(8, 4))``), the
    activations' traces are estimated too and their widths chosen with the weights'.
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
    omega_act = None
    if costs.act_layers:
        from .hessian import act_layers, activation_traces

        idx = np.random.default_rng(seed).permutation(len(x))[:calibration]
        _, omega_act = activation_traces(model, torch.as_tensor(x[idx]), torch.as_tensor(y[idx]),
                                         act_layers(model, xt), costs.act_choices, probes=probes, seed=seed)
    t1 = time.monotonic()
    alloc = allocate(omega, costs, budgets, omega_act)
    t2 = time.monotonic()
    apply_bits(model, [alloc.bits[n] for n in costs.layers], xt)
    if costs.act_layers:
        apply_act_bits(model, [alloc.act_bits[n] for n in costs.act_layers], xt)
    if epochs > 0:
        xv, yv = val_data if val_data is not None else (None, None)
        train(model, x, y, epochs=epochs, lr=lr, batch=batch, seed=seed, x_val=xv, y_val=yv, progress=progress,
              label="fine-tune")
    model.eval()
    return MixedPrecisionResult(model, alloc, traces or [], omega, [n for n, _ in layers],
                                {"sensitivity": t1 - t0, "ilp": t2 - t1, "fine_tune": time.monotonic() - t2})
