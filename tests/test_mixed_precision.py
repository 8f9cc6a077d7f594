"""Hessian-aware mixed precision (issue 15): Hutchinson traces, the ILP, the command."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.qat.hessian import (LayerTrace, hutchinson_traces, merge_traces, perturbation, quant_layers,
                                 quantized_weight, sensitivities, set_weight_bits)
from edgekit.qat.mixed_precision_alloc import (CostTable, InfeasibleBudget, allocate, distinct_random_assignments,
                                               feasible_assignments, pareto_sweep, random_assignment)


class _TwoBlockLinear(nn.Module):
    """f(x) = w1 . x[:, :d1] + w2 . x[:, d1:]: with the loss sum (f - y)^2 / 2 over n samples
    divided by n, the Hessian block of w_k is X_k^T X_k / n, so Tr = sum ||x_k,i||^2 / n."""

    def __init__(self, d1: int, d2: int):
        super().__init__()
        self.d1 = d1
        self.a = nn.Linear(d1, 1, bias=False)
        self.b = nn.Linear(d2, 1, bias=False)

    def forward(self, x):
        return (self.a(x[:, :self.d1]) + self.b(x[:, self.d1:])).squeeze(1)


def test_hutchinson_trace_of_a_quadratic_matches_the_analytic_trace():
    torch.manual_seed(0)
    d1, d2, n = 6, 10, 64
    x = torch.randn(n, d1 + d2) * torch.linspace(0.5, 2.0, d1 + d2)
    y = torch.randn(n)
    model = _TwoBlockLinear(d1, d2)
    sum_sq = lambda out, tgt: 0.5 * ((out - tgt) ** 2).sum()  # noqa: E731
    traces = hutchinson_traces(model, x, y, probes=200, loss_fn=sum_sq, batch=16,
                               layers=[("a", model.a), ("b", model.b)])
    exact = [float((x[:, :d1] ** 2).sum() / n), float((x[:, d1:] ** 2).sum() / n)]
    for t, e in zip(traces, exact):
        assert len(t.samples) == 200 and t.trace_stderr > 0
        assert abs(t.trace_mean - e) <= max(4 * t.trace_stderr, 0.02 * e), (t, e)
        assert abs(t.trace_mean - e) / e < 0.1


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # One input per weight: the Hessian is diagonal, and v^T H v = Tr(H) for every Rademacher v.
    model = nn.Linear(4, 1, bias=False)
    x = torch.eye(4) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    y = torch.zeros(4)
    sum_sq = lambda out, tgt: 0.5 * ((out.squeeze(1) - tgt) ** 2).sum()  # noqa: E731
    (t,) = hutchinson_traces(model, x, y, probes=3, loss_fn=sum_sq, layers=[("w", model)])
    assert t.trace_mean == pytest.approx((1 + 4 + 9 + 16) / 4, rel=1e-6)
    assert t.trace_stderr == pytest.approx(0.0, abs=1e-6)


def _brevitas_mlp():
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Int8ActPerTensorFixedPoint

    torch.manual_seed(0)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
        qnn.QuantLinear(8, 16, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias,
                        return_quant_tensor=True),
        qnn.QuantReLU(return_quant_tensor=True),
        qnn.QuantLinear(16, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias,
                        return_quant_tensor=False))


def test_perturbation_grows_as_bits_shrink_and_matches_the_layers_own_quantizer():
    model = _brevitas_mlp()
    x = torch.randn(32, 8)
    layers = quant_layers(model, x)
    assert [n for n, _ in layers] == ["1", "3"]
    lin = layers[0][1]
    errs = [perturbation(lin, b) for b in (8, 4, 2)]
    assert 0 < errs[0] < errs[1] < errs[2]
    q2 = quantized_weight(lin, 2)
    assert len(torch.unique(q2)) <= 3  # 2-bit narrow range: -1, 0, 1 times the scale
    set_weight_bits(lin, 2)
    assert torch.equal(lin.quant_weight().value.detach(), q2)
    traces = hutchinson_traces(model, x, torch.randint(0, 3, (32,)), probes=4, layers=layers)
    omega = sensitivities(layers, traces)
    assert omega.shape == (2, 3)
    assert np.all(omega >= 0)


def _table(rng, n_layers=4, bits=(8, 4, 2)):
    flash = np.sort(rng.integers(50, 400, (n_layers, len(bits))), axis=1)[:, ::-1].astype(float)  # 8 bits biggest
    ins = rng.integers(1000, 5000, (n_layers, len(bits))).astype(float)
    return CostTable([f"l{i}" for i in range(n_layers)], bits, {"flash": 1000.0, "instructions": 500.0},
                     {"flash": flash, "instructions": ins}, {"ram": 2048.0})


def brute_force_best(omega, costs, budgets, options):
    """(least sensitivity, choice) over every assignment of the width indices ``options[l]`` to layer l that meets
    ``budgets``, by enumeration; (inf, None) where none does: what the ILP must find."""
    best, best_choice = np.inf, None
    for choice in itertools.product(*options):
        if all(costs.total(r, list(choice)) <= v for r, v in budgets.items()):
            s = sum(omega[i, j] for i, j in enumerate(choice))
            if s < best:
                best, best_choice = s, choice
    return best, best_choice


def test_ilp_finds_the_brute_force_optimum_within_budgets():
    rng = np.random.default_rng(1)
    for _ in range(12):
        costs = _table(rng)
        omega = np.sort(rng.random((4, 3)), axis=1) * rng.random((4, 1)) * 10
        budgets = {"flash": 1000 + float(rng.integers(300, 1400)),
                   "instructions": 500 + float(rng.integers(6000, 16000))}
        best, best_choice = brute_force_best(omega, costs, budgets, [range(3)] * 4)
        if best_choice is None:
            with pytest.raises(InfeasibleBudget):
                allocate(omega, costs, budgets)
            continue
        a = allocate(omega, costs, budgets)
        assert a.sensitivity == pytest.approx(best)
        for r, v in budgets.items():
            assert a.predicted[r] <= v
        assert set(a.bits.values()) <= {8, 4, 2}


def test_joint_ilp_with_activation_widths_and_bilinear_bops_matches_brute_force():
    """Activation rows (8/4 bits) join the ILP: layer 0 takes the 8-bit input, layers 1 and 2
    are fed by activation rows 0 and 1, so their BOPs are MACs x w x a; the product variables
    must give exactly the brute-force optimum under flash, instructions and BOPs budgets."""
    rng = np.random.default_rng(7)
    for _ in range(10):
        costs = _table(rng, n_layers=3)
        macs = [float(v) for v in rng.integers(100, 1000, 3)]
        costs.per_layer["bops"] = np.array([[macs[0] * b * 8 for b in costs.bit_choices]] * 3)
        costs.base["bops"] = 0.0
        costs.act_layers, costs.act_choices = ["r0", "r1"], (8, 4)
        costs.act_per_layer = {"instructions": rng.integers(-200, 0, (2, 2)).astype(float) * [[0, 1]]}
        costs.act_input, costs.macs = [None, 0, 1], macs
        omega = np.sort(rng.random((3, 3)), axis=1) * 10
        omega_act = np.sort(rng.random((2, 2)), axis=1) * 10
        hi = sum(m * 64 for m in macs)
        budgets = {"bops": float(rng.integers(int(hi * 0.15), int(hi * 0.9))),
                   "flash": 1000 + float(rng.integers(400, 1200))}
        best, best_pick = np.inf, None
        for choice in itertools.product(range(3), repeat=3):
            for act in itertools.product(range(2), repeat=2):
                if all(costs.total(r, list(choice), list(act)) <= v for r, v in budgets.items()):
                    s = sum(omega[i, j] for i, j in enumerate(choice)) + sum(omega_act[a, k] for a, k in enumerate(act))
                    if s < best:
                        best, best_pick = s, (choice, act)
        if best_pick is None:
            with pytest.raises(InfeasibleBudget):
                allocate(omega, costs, budgets, omega_act)
            continue
        a = allocate(omega, costs, budgets, omega_act)
        assert a.sensitivity == pytest.approx(best)
        assert a.predicted["bops"] <= budgets["bops"] and a.predicted["flash"] <= budgets["flash"]
        assert a.predicted["bops"] == pytest.approx(sum(
            macs[i] * a.bits[f"l{i}"] * (8 if i == 0 else a.act_bits[f"r{i - 1}"]) for i in range(3)))
        assert set(a.act_bits.values()) <= {8, 4}


def test_ilp_refuses_an_infeasible_budget_with_what_it_needs():
    costs = _table(np.random.default_rng(2))
    omega = np.ones((4, 3))
    least = 1000 + costs.per_layer["flash"].min(axis=1).sum()
    with pytest.raises(InfeasibleBudget, match=f"flash bytes {least:,.0f}"):
        allocate(omega, costs, {"flash": least - 1})
    assert allocate(omega, costs, {"flash": least}).predicted["flash"] == least
    with pytest.raises(InfeasibleBudget, match="ram"):
        allocate(omega, costs, {"ram": 1000})


def test_pareto_sweep_is_monotone_and_random_assignments_meet_the_budget():
    rng = np.random.default_rng(3)
    costs = _table(rng)
    omega = np.sort(rng.random((4, 3)), axis=1)
    front = pareto_sweep(omega, costs, "flash", steps=12)
    assert len(front) >= 2
    flashes = [a.predicted["flash"] for a in front]
    sens = [a.sensitivity for a in front]
    assert flashes == sorted(flashes) and sens == sorted(sens, reverse=True)
    assert front[-1].choice == [0, 0, 0, 0]  # the largest budget: every layer at 8 bits
    budget = 1000 + costs.per_layer["flash"].mean(axis=1).sum()
    for _ in range(5):
        assert random_assignment(omega, costs, {"flash": budget}, rng).predicted["flash"] <= budget


def test_feasible_assignments_are_the_brute_force_band_and_random_draws_are_distinct():
    rng = np.random.default_rng(5)
    costs = _table(rng)
    omega = np.sort(rng.random((4, 3)), axis=1)
    budget = 1000 + costs.per_layer["flash"].mean(axis=1).sum()
    floor = budget - 300
    expected = {c for c in itertools.product(range(3), repeat=4)
                if floor <= costs.total("flash", list(c)) <= budget}
    pool = feasible_assignments(omega, costs, {"flash": budget}, {"flash": floor})
    assert {tuple(a.choice) for a in pool} == expected and len(expected) > 5
    assert [a.sensitivity for a in pool] == sorted(a.sensitivity for a in pool)
    assert pool[0].sensitivity == pytest.approx(allocate(omega, costs, {"flash": budget}).sensitivity) or \
        allocate(omega, costs, {"flash": budget}).predicted["flash"] < floor
    picks = distinct_random_assignments(omega, costs, {"flash": budget}, 5, np.random.default_rng(0), {"flash": floor})
    assert len({tuple(a.choice) for a in picks}) == 5 and all(tuple(a.choice) in expected for a in picks)
    every = distinct_random_assignments(omega, costs, {"flash": budget}, 999, np.random.default_rng(0), {"flash": floor})
    assert len(every) == len(expected)  # fewer than asked exist: all of them, once each
    with pytest.raises(InfeasibleBudget):
        distinct_random_assignments(omega, costs, {"flash": 10}, 5, np.random.default_rng(0))


def test_merge_traces_pools_the_probes_of_independent_estimates():
    a = [LayerTrace("l", 10, 2.0, 0.0, [1.0, 3.0]), LayerTrace("m", 4, 1.0, 0.0, [1.0, 1.0])]
    b = [LayerTrace("l", 10, 6.0, 0.0, [5.0, 7.0]), LayerTrace("m", 4, 3.0, 0.0, [3.0, 3.0])]
    l, m = merge_traces(a, b)
    assert (l.name, l.n_params, l.trace_mean, len(l.samples)) == ("l", 10, 4.0, 4)
    assert l.trace_stderr == pytest.approx(np.std([1, 3, 5, 7], ddof=1) / 2)
    assert m.trace_mean == 2.0
    with pytest.raises(ValueError):
        merge_traces(a, b[::-1])


def _run_cli(args, capsys):
    from edgekit.cli import main

    rc = main(args)
    return rc, capsys.readouterr()


def test_cli_infeasible_flash_budget_is_one_error_line(tmp_path, capsys):
    rc, cap = _run_cli(["mixed-precision", "--model", "zoo:har-cnn", "--dataset", "har", "--board", "mps2-an386",
                        "--kernels", "reference", "--max-flash", "1KB", "--train-subset", "64", "-o",
                        str(tmp_path / "o")], capsys)
    assert rc == 2
    err = [line for line in cap.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "flash bytes" in err[0] and "budget 1,024" in err[0], cap.err
    assert "Traceback" not in cap.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--max-flash", "6QB"], "error: --max-flash: cannot read a size from '6QB'"),
    ([], "error: give at least one budget"),
    (["--max-flash", "0"], "error: budgets must be positive"),
    (["--max-bops", "1000000", "--act-bits", "4,2"], "error: --act-bits must include 8"),
    (["--max-bops", "1000000", "--act-bits", "8,x"], "error: --act-bits: expected comma-separated widths"),
    (["--max-bops", "1000000", "--act-bits", "8,3"], "error: --act-bits takes 8, 4 and/or 2"),
    (["--max-flash", "6KB", "--threads", "0"], "error: --threads 0: give 1 or more torch threads"),
])
def test_cli_bad_budget_options_are_one_error_line(args, message, tmp_path, capsys):
    rc, cap = _run_cli(["mixed-precision", "--model", "zoo:har-cnn", "--dataset", "har", "--board", "mps2-an386",
                        *args, "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and cap.err.strip().startswith(message) and len(cap.err.strip().splitlines()) == 1, cap.err
    assert not (tmp_path / "o").exists()


def test_cli_unknown_zoo_model_is_one_error_line(tmp_path, capsys):
    rc, cap = _run_cli(["mixed-precision", "--model", "zoo:nope", "--dataset", "digits", "--board", "mps2-an386",
                        "--max-flash", "8KB", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and cap.err.strip().startswith("error: unknown zoo model 'zoo:nope'")


@pytest.mark.slow
def test_cli_end_to_end_meets_measured_budgets(tmp_path, capsys):
    out = tmp_path / "mp"
    rc, cap = _run_cli(["mixed-precision", "--model", "zoo:har-cnn", "--dataset", "har", "--board", "mps2-an386",
                        "--kernels", "reference", "--max-flash", "6KB", "--max-ram", "16KB", "--train-subset", "128",
                        "--pretrain-epochs", "1", "--epochs", "1", "--probes", "2", "--calibration", "64",
                        "-o", str(out)], capsys)
    assert rc == 0, cap.err
    s = json.loads((out / "report.json").read_text())
    m = s["result"]["measured"]
    assert m["bit_exact"] and m["flash_bytes"] <= 6 * 1024 and m["ram_bytes"] <= 16 * 1024
    bits = json.loads((out / "assignment.json").read_text())["bits"]
    assert set(bits) == {"features.0", "features.3", "features.6", "fc"} and set(bits.values()) <= {8, 4, 2}
    assert any(b < 8 for b in bits.values())  # 6 KB cannot hold the all-8-bit model (9 KB)
    for f in ("model.onnx", "build/manifest.json", "accuracy_flash.svg", "report.txt", "pareto.json"):
        assert (out / f).is_file(), f
    assert (out / "accuracy_flash.svg").read_text().lstrip().startswith("<?xml")
    assert "bit-exact on mps2-an386: yes" in cap.out


def test_python_api_applies_the_allocation_and_fine_tunes():
    from edgekit.qat import mixed_precision
    from edgekit.qat.hessian import weight_bits

    model = _brevitas_mlp()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    # layer "3" costs the same at every width; the budget only fits layer "1" at 2 bits
    costs = CostTable(["1", "3"], (8, 4, 2), {"flash": 100.0},
                      {"flash": np.array([[128.0, 64.0, 32.0], [48.0, 48.0, 48.0]])})
    before = [p.detach().clone() for p in model.parameters()]
    res = mixed_precision(model, (x, y), {"flash": 100 + 32 + 48}, costs, epochs=1, probes=2, calibration=64)
    assert res.allocation.bits["1"] == 2
    assert [weight_bits(m) for _, m in quant_layers(model)] == [res.allocation.bits["1"], res.allocation.bits["3"]]
    assert res.allocation.predicted["flash"] <= 180
    assert len(res.traces) == 2 and res.omega.shape == (2, 3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # fine-tuned


def _tiny_act_model():
    import brevitas.nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)

    torch.manual_seed(0)
    lin = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias, bias=True)
    model = nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                          qnn.QuantLinear(5, 6, return_quant_tensor=True, **lin),
                          qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                          qnn.QuantLinear(6, 3, return_quant_tensor=False, **lin))
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(32, 5))
    return model.eval()


def test_set_act_bits_keeps_the_calibrated_range():
    from edgekit.qat.hessian import act_bits, set_act_bits

    model = _tiny_act_model()
    relu = model[2]
    s8 = float(relu.act_quant.scale())
    set_act_bits(relu, 4)
    assert act_bits(relu) == 4
    assert float(relu.act_quant.scale()) == pytest.approx(s8 * 2 ** 4)  # same threshold, 16x coarser grid


def test_activation_trace_matches_the_exact_hessian_and_4_bits_cost_more():
    """Hutchinson's estimate of Tr(H) w.r.t. the ReLU's activations against the exact trace
    (torch.autograd.functional.hessian over a perturbation of that activation)."""
    from edgekit.qat.hessian import act_layers, activation_traces

    model = _tiny_act_model()
    x, y = torch.randn(8, 5) * 2, torch.randint(0, 3, (8,))
    relu = model[2]

    def loss_at(d):
        h = relu.register_forward_pre_hook(lambda _m, a: (a[0].value + d,))
        try:
            return nn.functional.cross_entropy(model(x), y, reduction="sum") / len(x)
        finally:
            h.remove()

    exact = float(torch.autograd.functional.hessian(loss_at, torch.zeros(8, 6)).reshape(48, 48).trace())
    acts = act_layers(model, x[:1])
    assert [n for n, _ in acts] == ["2"]
    traces, omega = activation_traces(model, x, y, acts, (8, 4), probes=400)
    t = traces[0]
    assert t.n_params == 48 and exact > 0
    assert abs(t.trace_mean - exact) <= 4 * t.trace_stderr + 1e-9
    assert omega.shape == (1, 2) and omega[0, 1] > omega[0, 0] > 0


def test_distillation_loss_is_the_weighted_kl_and_cross_entropy():
    from edgekit.qat.train import distillation_loss

    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, -2.0], [0.0, 3.0, 0.0]])
    target = torch.tensor([0, 1])
    ce = nn.functional.cross_entropy(student, target)
    assert torch.isclose(distillation_loss(student, teacher, target, alpha=0.0), ce)
    assert float(distillation_loss(teacher, teacher, target, alpha=1.0)) == pytest.approx(0.0, abs=1e-7)
    t = 4.0
    p_t = torch.softmax(teacher / t, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(student / t, 1))).sum(1).mean()
    want = 0.7 * t * t * kl + 0.3 * ce
    assert torch.isclose(distillation_loss(student, teacher, target, alpha=0.7, temperature=t), want)


def test_training_with_a_teacher_moves_the_student_to_the_teachers_outputs():
    from edgekit.qat.train import train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = rng.integers(0, 3, 256).astype(np.int64)  # labels unrelated to the teacher: alpha 1 must ignore them
    torch.manual_seed(1)
    teacher, student = nn.Linear(6, 3), nn.Linear(6, 3)

    def gap():
        with torch.no_grad():
            xt = torch.as_tensor(x)
            return float(nn.functional.kl_div(torch.log_softmax(student(xt), 1), torch.log_softmax(teacher(xt), 1),
                                              reduction="batchmean", log_target=True))

    before = gap()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    train(student, x, y, epochs=20, lr=1e-2, progress=False, teacher=teacher, distill_alpha=1.0, temperature=1.0)
    assert gap() < 0.1 * before
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())  # the teacher is not trained
