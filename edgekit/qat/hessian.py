"""Second-order sensitivity of a QAT model's layers (HAWQ-V2): Hessian traces by Hutchinson's method.

For every weight-quantized layer l (Brevitas ``QuantConv*``/``QuantLinear``), Tr(H_l), the
trace of the Hessian of the loss with respect to that layer's weights, is estimated as the
mean of v^T H v over Rademacher probes v (E[v v^T] = I). One probe covers all layers at
once: a single Hessian-vector product (double backward through torch.autograd) over the
concatenated weights, whose per-layer dot products v_l^T (Hv)_l are unbiased estimates of
the diagonal blocks' traces. The spread across probes is reported as a standard error.

Brevitas' weight quantizers pass gradients straight through (STE), so the Hessian is the
loss curvature at the model's current (quantized) weights; computed on an 8-bit or float
checkpoint, it ranks layers by how much a perturbation of their weights costs.

HAWQ-V2's perturbation-weighted sensitivity of layer l at b bits is
``Omega_l(b) = Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2``, where Q_b quantizes the float weights
exactly as the layer's own quantizer would at b bits (its scale rule, narrow range,
rounding). A negative trace estimate (non-convex region, or noise) is clipped to zero
in the sensitivity: a layer cannot gain from a coarser grid.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


def _in_execution_order(model: nn.Module, layers: list[tuple[str, nn.Module]],
                        example: torch.Tensor | None) -> list[tuple[str, nn.Module]]:
    """``layers`` in the order one forward pass of ``example`` runs them (forward hooks), layers
    the pass never reached last; registration order without ``example``."""
    if example is None:
        return layers
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n)) for n, m in layers]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example[:1])
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    by_name = dict(layers)
    seen = list(dict.fromkeys(order))
    return [(n, by_name[n]) for n in seen] + [(n, m) for n, m in layers if n not in seen]


def quant_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every weight-quantized layer, in execution order when ``example``
    is given (forward hooks on one pass), else in registration order."""
    import brevitas.nn as qnn

    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, qnn.quant_layer.QuantWeightBiasInputOutputLayer)]
    return _in_execution_order(model, layers, example)


def weight_bits(module: nn.Module) -> int:
    return int(round(float(module.weight_quant.bit_width())))


def set_weight_bits(module: nn.Module, bits: int) -> None:
    """Re-instantiate the layer's weight quantizer at ``bits`` (same quantizer class, scale
    rule and rounding; the float weights are untouched).

    At 1 bit a signed narrow-range integer would hold only 0, so the layer gets a binary
    (sign) quantizer instead: Brevitas' ``BinaryQuant`` (``w >= 0 ? +s : -s``, exported as
    QONNX ``BipolarQuant``) with the layer's scale granularity (per tensor or per channel)
    and restriction (power of two), the scale from the mean of |W| (the least-squares scale
    of a sign code, XNOR-Net), rounded to the nearest power of two in the log domain. The
    integer quantizer is kept on the proxy, so a later call with 2 or more bits restores it."""
    from brevitas.core.function_wrapper import RoundSte
    from brevitas.core.stats import StatsOp
    from brevitas.inject.enum import QuantType

    proxy = module.weight_quant
    int_injector = getattr(proxy, "_edgekit_int_injector", None)
    if int(bits) == 1:
        if int_injector is None:
            int_injector = proxy._edgekit_int_injector = proxy.quant_injector
        proxy.quant_injector = int_injector.let(quant_type=QuantType.BINARY, bit_width=1,
                                                scaling_stats_op=StatsOp.AVE,
                                                restrict_value_float_to_int_impl=RoundSte)
    else:
        base = int_injector if int_injector is not None else proxy.quant_injector
        proxy.quant_injector = base.let(bit_width=int(bits))
    proxy.init_tensor_quant()


def act_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every unsigned activation quantizer (``QuantReLU``): the activation
    widths a model offers as a choice, in execution order when ``example`` is given."""
    import brevitas.nn as qnn

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, qnn.QuantReLU)]
    return _in_execution_order(model, layers, example)


def act_bits(module: nn.Module) -> int:
    return int(round(float(module.act_quant.bit_width())))


def set_act_bits(module: nn.Module, bits: int) -> None:
    """Re-instantiate an activation quantizer at ``bits`` keeping its calibrated range: the
    learned threshold (the scale times 2^bits) carries over, so a power-of-two scale of
    2^-4 at 8 bits becomes 2^0 at 4 bits over the same [0, 16) range."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    proxy = module.act_quant
    proxy.quant_injector = proxy.quant_injector.let(bit_width=int(bits))
    proxy.init_tensor_quant()
    module.load_state_dict(state)


def quantized_weight(module: nn.Module, bits: int) -> torch.Tensor:
    """Q_b(W): the layer's float weights quantized by its own quantizer at ``bits``."""
    probe = copy.deepcopy(module)
    set_weight_bits(probe, bits)
    with torch.no_grad():
        return probe.quant_weight().value.detach().clone()


@dataclass
class LayerTrace:
    name: str
    n_params: int
    trace_mean: float            # estimated Tr(H_l)
    trace_stderr: float          # std over probes / sqrt(probes)
    samples: list[float] = field(default_factory=list)

    @property
    def rel_stderr(self) -> float:
        return self.trace_stderr / abs(self.trace_mean) if self.trace_mean else math.inf


def hutchinson_traces(model: nn.Module, x: torch.Tensor, y: torch.Tensor, probes: int = 32,
                      loss_fn: nn.Module | None = None, batch: int = 256, seed: int = 0,
                      layers: list[tuple[str, nn.Module]] | None = None) -> list[LayerTrace]:
    """Per-layer Hessian traces of the mean loss over (x, y), ``probes`` Rademacher probes.

    The loss is summed over mini-batches of ``batch`` samples and divided by len(x), so the
    estimate is that of the whole calibration set's mean loss.
    """
    if probes < 2:
        raise ValueError("Hutchinson's method needs at least 2 probes to report a spread")
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    layers = layers if layers is not None else quant_layers(model, x)
    if not layers:
        raise ValueError("the model has no weight-quantized layers")
    params = [m.weight for _, m in layers]
    model.eval()  # no quantizer statistics update, no dropout
    gen = torch.Generator().manual_seed(seed)
    samples = np.zeros((probes, len(params)))
    n = len(x)
    for p in range(probes):
        vs = [torch.randint(0, 2, w.shape, generator=gen).to(w.dtype) * 2 - 1 for w in params]
        hv_total = [torch.zeros_like(w) for w in params]
        for i in range(0, n, batch):
            loss = loss_fn(model(x[i:i + batch]), y[i:i + batch]) / n
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(grads, params, grad_outputs=vs)
            for acc, h in zip(hv_total, hv):
                acc += h.detach()
        samples[p] = [float((v * h).sum()) for v, h in zip(vs, hv_total)]
    out = []
    for j, (name, _) in enumerate(layers):
        s = samples[:, j]
        out.append(LayerTrace(name, params[j].numel(), float(s.mean()), float(s.std(ddof=1) / math.sqrt(probes)),
                              [float(v) for v in s]))
    return out


def merge_traces(*estimates: list[LayerTrace]) -> list[LayerTrace]:
    """Pool independent estimates of the same layers' traces (other probes, other calibration
    samples): the mean and standard error over all their probes."""
    out = []
    for same_layer in zip(*estimates):
        s = np.concatenate([t.samples for t in same_layer])
        first = same_layer[0]
        if any(t.name != first.name for t in same_layer):
            raise ValueError("trace estimates of different layers cannot be pooled")
        out.append(LayerTrace(first.name, first.n_params, float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s))),
                              [float(v) for v in s]))
    return out


def perturbation(module: nn.Module, bits: int) -> float:
    """||Q_b(W) - W||^2 for the layer's float weights."""
    with torch.no_grad():
        return float(((quantized_weight(module, bits) - module.weight.detach()) ** 2).sum())


def sensitivities(layers: list[tuple[str, nn.Module]], traces: list[LayerTrace],
                  bit_choices: tuple[int, ...] = (8, 4, 2)) -> np.ndarray:
    """Omega[l, j] = max(Tr(H_l), 0) / n_l * ||Q_{b_j}(W_l) - W_l||^2 (HAWQ-V2)."""
    omega = np.zeros((len(layers), len(bit_choices)))
    for i, ((_, m), t) in enumerate(zip(layers, traces)):
        for j, b in enumerate(bit_choices):
            omega[i, j] = max(t.trace_mean, 0.0) / t.n_params * perturbation(m, b)
    return omega


def activation_traces(model: nn.Module, x: torch.Tensor, y: torch.Tensor, acts: list[tuple[str, nn.Module]],
                      bit_choices: tuple[int, ...] = (8, 4), probes: int = 32, loss_fn: nn.Module | None = None,
                      batch: int = 256, seed: int = 0) -> tuple[list[LayerTrace], np.ndarray]:
    """Hessian traces with respect to activations, and the activations' HAWQ-V2 sensitivity.

    Every activation quantizer in ``acts`` gets a zero perturbation d added to its input (a
    forward pre-hook); the Hessian of the mean loss over (x, y) with respect to d is that
    with respect to the activation, through the quantizer's straight-through gradient
    (zero where ReLU or the clipping cuts it). Tr(H_a) sums over the calibration samples'
    activations (the Hessian is block-diagonal across samples, so one Rademacher probe per
    mini-batch is unbiased), n_a counts those elements, and ||Q_b(a) - a||^2 is the squared
    error of the quantizer at b bits (its calibrated range kept) against the float ReLU
    output, over the same samples. Returns the traces and ``Omega[a, k] = max(Tr, 0) / n_a *
    ||Q_{b_k}(a) - a||^2``.
    """
    if probes < 2:
        raise ValueError("Hutchinson's method needs at least 2 probes to report a spread")
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    at_bits = []  # per activation: copies of the quantizer at each width (no hooks)
    for _, m in acts:
        copies = []
        for b in bit_choices:
            c = copy.deepcopy(m)
            set_act_bits(c, b)
            copies.append(c.eval())
        at_bits.append(copies)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    samples = np.zeros((probes, len(acts)))
    sq_err = np.zeros((len(acts), len(bit_choices)))
    n_elem = np.zeros(len(acts))
    deltas: list[torch.Tensor | None] = [None] * len(acts)
    record = {"on": False}

    def pre_hook(i):
        def hook(_m, args):
            value = args[0].value if hasattr(args[0], "value") else args[0]
            if record["on"]:
                with torch.no_grad():
                    a = torch.relu(value)
                    n_elem[i] += a.numel()
                    for k, c in enumerate(at_bits[i]):
                        q = c(value)
                        sq_err[i, k] += float(((q.value if hasattr(q, "value") else q) - a).pow(2).sum())
            d = torch.zeros_like(value, requires_grad=True)
            deltas[i] = d
            return (value + d,) + tuple(args[1:])
        return hook

    hooks = [m.register_forward_pre_hook(pre_hook(i)) for i, (_, m) in enumerate(acts)]
    try:
        for p in range(probes):
            for i0 in range(0, n, batch):
                record["on"] = p == 0
                loss = loss_fn(model(x[i0:i0 + batch]), y[i0:i0 + batch]) / n
                ds = list(deltas)
                grads = torch.autograd.grad(loss, ds, create_graph=True)
                vs = [torch.randint(0, 2, d.shape, generator=gen).to(d.dtype) * 2 - 1 for d in ds]
                hv = torch.autograd.grad(grads, ds, grad_outputs=vs)
                samples[p] += [float((v * h).sum()) for v, h in zip(vs, hv)]
    finally:
        record["on"] = False
        for h in hooks:
            h.remove()
    traces, omega = [], np.zeros((len(acts), len(bit_choices)))
    for i, (name, _) in enumerate(acts):
        s = samples[:, i]
        t = LayerTrace(name, int(n_elem[i]), float(s.mean()), float(s.std(ddof=1) / math.sqrt(probes)),
                       [float(v) for v in s])
        traces.append(t)
        omega[i] = max(t.trace_mean, 0.0) / max(t.n_params, 1) * sq_err[i]
    return traces, omega
