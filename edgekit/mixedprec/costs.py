"""What each layer costs at each weight width, measured on builds (not predicted).

The model is exported and built for the board once per candidate width with every layer
at that width (three builds for 8/4/2 bits), and each build is profiled on the emulated
core. Per layer and width:

* **flash**: the layer's weight and bias arrays as the build stores them (the manifest's
  ``weight_symbols``: packed 4-/2-bit codes under the reference kernels, int8 or int16
  under the DSP kernels, whichever the kernel selection chose) plus the layer's own code
  (its ``ek_layerN_<node>`` function in the firmware ELF: the generated kernels are
  specialised per layer);
* **instructions** and **cycles**: the profiler's exact per-layer counts on the emulated
  core (its cycle estimate for latency);
* **BOPs**: MACs x weight bits x input activation bits (the FPGA budget).

Everything else (runtime, glue, biases, the other layers) is the ``base``: the all-8-bit
build's total minus its layers' shares. Peak RAM (the planner's arena plus static data
and the reserved stack) does not depend on weight widths here (activations keep their
widths); it is the largest of the builds. A layer's kernel, memory placement and code
depend only on its own width, so the totals of a mixed assignment are the sums, up to
a few bytes of code alignment and of shift constants that fine-tuning may change; the
flow therefore measures the final build and re-solves when a measurement exceeds a budget.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import EdgekitError
from ..nas.hawq import layer_flash
from ..qat import CostTable, export_qonnx
from ..qat.hessian import act_layers, quant_layers, set_act_bits
from ..qat.mixed_precision_alloc import apply_bits

RESOURCES = ("flash", "instructions", "cycles", "bops")


def binary_kernels() -> set[str]:
    """The Cortex-M kernel variants that run 1-bit (binary) weights as bits: dense_binary
    (binary weights x integer inputs), the XNOR kernels (binary weights x -1/+1 inputs)."""
    from ..backends.cortexm.kernels import binary, mve_xnor

    return {v.name for v in (*binary.VARIANTS, *mve_xnor.VARIANTS)}


def distinct_channel_scales(model, example: torch.Tensor) -> None:
    """Give every per-channel weight-quantized layer per-channel scales that differ, as a
    trained model's do: each output channel's random weights divided by 1, 2 or 4 (drawn per
    layer from a fixed seed, so no two layers get the same pattern: the build stores equal
    requantization arrays once). Calibrated random weights have equal per-channel scales, and
    the build then stores one shift per layer instead of per-channel requantization records
    (+840 to +880 B on digits-cnn under the reference kernels): a cost table measured on them
    would not see what a trained model's build stores."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, m in quant_layers(model, example):
            oc = m.weight.shape[0]
            exponents = torch.randint(0, 3, (oc,), generator=gen)
            if m.quant_weight().scale.numel() > 1 and oc > 1:
                exponents[:2] = torch.tensor([0, 1])  # never all equal
                factor = 2.0 ** -exponents.to(m.weight.dtype)
                m.weight.mul_(factor.reshape(oc, *([1] * (m.weight.dim() - 1))))


def equalize_channel_scales(model, example: torch.Tensor, bits: list[int]) -> None:
    """Make every per-channel weight-quantized layer's channel scales equal at its width in
    ``bits``: each output channel's weights rescaled to the same statistic as its quantizer
    reads (the largest |w| for integer widths, the mean |w| for binary ones)."""
    with torch.no_grad():
        for (_, m), b in zip(quant_layers(model, example), bits):
            if m.quant_weight().scale.numel() > 1:
                flat = m.weight.abs().reshape(m.weight.shape[0], -1)
                stat = flat.mean(dim=1) if b == 1 else flat.amax(dim=1)
                factor = stat.max() / stat.clamp_min(1e-12)
                m.weight.mul_(factor.reshape(-1, *([1] * (m.weight.dim() - 1))))


def binary_refusal(node, graph) -> str | None:
    """Why no binary kernel can run this weight layer with 1-bit weights, or None: dense_binary
    takes dense layers with integer inputs, the XNOR kernels convolutions with -1/+1 inputs."""
    from ..backends.cortexm.kernels.binary import bipolar_tensor

    if node.op == "dense":
        return None
    if node.op == "conv2d" and node.attrs.get("depthwise"):
        return "depthwise convolution: no binary kernel"
    if node.op == "conv2d":
        return None if bipolar_tensor(graph, node.inputs[0]) else \
            "convolution of integer inputs: the binary convolutions (XNOR) need -1/+1 inputs"
    return f"{node.op}: no binary kernel"


def measure_uniform(model, example: torch.Tensor, target: str, board: str, work: Path, bits: int | list[int],
                    kernels: str | None = None, distinct_scales: bool = True) -> dict:
    """Build and profile ``model`` with every layer at ``bits`` (or ``bits[l]`` for layer l):
    per-layer and total costs; per-channel scales made to differ (``distinct_channel_scales``)
    unless ``distinct_scales`` is False."""
    from ..api import build
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph

    m = copy.deepcopy(model)
    n = len(quant_layers(m, example))
    bits = bits if isinstance(bits, list) else [bits] * n
    if distinct_scales:
        distinct_channel_scales(m, example)
    else:
        equalize_channel_scales(m, example, bits)
    apply_bits(m, bits, example)
    work.mkdir(parents=True, exist_ok=True)
    onnx = export_qonnx(m, example[:1], work / "model.onnx")
    res = build(onnx, target, board, work / "build", kernels=kernels)
    man = res.manifest
    graph = Graph.load(res.out_dir)
    prof = profile(res.out_dir, count=1, write=False).to_json()
    per = {r["name"]: r for r in prof["layers"]}
    macs = {row["name"]: row["macs"] for row in man.layers}
    nodes = {n.name: n for n in graph.nodes}
    layers = []
    for row in layer_flash(res.out_dir, man, graph):
        n = row["node"]
        layers.append({**row, "instructions": per[n]["instructions"], "cycles": per[n]["est_cycles"],
                       "macs": macs.get(n, 0), "kernel": man.kernel_variants.get(n),
                       "binary_refusal": binary_refusal(nodes[n], graph)})
    return {"bits": bits, "build_dir": str(res.out_dir), "kernel_variants": man.kernel_variants,
            "flash": man.memory["flash_bytes"], "ram": man.memory["ram_bytes"],
            "instructions": prof["total"]["instructions"], "cycles": prof["total"]["est_cycles"],
            "clock_hz": prof.get("clock_hz"), "layers": layers}


def act_wiring(model, example: torch.Tensor) -> tuple[list[int], list[int | None]]:
    """For the model's activation quantizers (``hessian.act_layers``): the weight layer whose
    output each one quantizes (the last one run before it), and for every weight layer the
    activation row it takes as input (its input carries that quantizer's width through
    max-pooling and reshapes; a re-quantizer in between, e.g. after an average, cuts it)."""
    weights = quant_layers(model, example)
    acts = act_layers(model, example)
    seq: list[tuple[str, int]] = []
    hooks = [m.register_forward_hook(lambda *_, i=i: seq.append(("w", i))) for i, (_, m) in enumerate(weights)]
    hooks += [m.register_forward_hook(lambda *_, i=i: seq.append(("a", i))) for i, (_, m) in enumerate(acts)]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    producer, last = [0] * len(acts), None
    for kind, i in seq:
        if kind == "w":
            last = i
        elif last is None:
            raise EdgekitError(f"activation {acts[i][0]} runs before any weight layer; cannot attribute its cost")
        else:
            producer[i] = last
    fed: list[int | None] = [None] * len(weights)
    for r in range(len(acts)):
        probe = copy.deepcopy(model)
        set_act_bits(act_layers(probe, example)[r][1], 3)  # a width nothing else has
        seen: dict[int, object] = {}

        def note_input(i):
            def hook(_m, args):
                seen.setdefault(i, getattr(args[0], "bit_width", None))  # returns None: the input is unchanged
            return hook

        hs = [m.register_forward_pre_hook(note_input(i)) for i, (_, m) in enumerate(quant_layers(probe, example))]
        try:
            with torch.no_grad():
                probe.eval()(example[:1])
        finally:
            for h in hs:
                h.remove()
        for i, bw in seen.items():
            if bw is not None and int(round(float(bw))) == 3:
                fed[i] = r
    return producer, fed


def node_costs(build_dir: Path, manifest, graph, prof: dict) -> dict:
    """Per IR node of a profiled build: instructions, cycles, and flash (its arrays and its
    generated functions)."""
    from ..backends.cortexm import toolchain as tc

    wsyms = {s["symbol"]: s["bytes"] for s in manifest.memory_breakdown["weight_symbols"]}
    elf = tc.symbols(Path(build_dir) / manifest.firmware)
    per = {r["name"]: r for r in prof["layers"]}
    out = {}
    for n in graph.nodes:
        own = re.compile(rf"^ek_(?:layer\d+_)?{re.escape(n.name)}_[a-z]\w*$")
        fn = re.compile(rf"^ek_layer\d+_{re.escape(n.name)}(?:_[a-z]\w*)?$")
        flash = sum(v for k, v in wsyms.items() if own.match(k))
        flash += sum(s["size"] for s in elf if s["type"] in "tT" and fn.match(s["name"]))
        row = per.get(n.name, {})
        out[n.name] = {"flash": flash, "instructions": row.get("instructions", 0), "cycles": row.get("est_cycles", 0)}
    return out


def measure_act_costs(model, example: torch.Tensor, target: str, board: str, work: Path,
                      act_choices: tuple[int, ...], weight_nodes_ir: list[str], kernels: str | None = None,
                      say=print) -> dict:
    """Per activation row and width, the change of flash, instructions and cycles against
    all activations at ``act_choices[0]``, from one build per width with every activation at
    it (weights at 8 bits). A row owns the IR nodes from the weight layer it quantizes up to
    the next weight layer (the requantizing layer itself, pooling, reshapes)."""
    from ..api import build
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph

    acts = act_layers(model, example)
    producer, fed = act_wiring(model, example)
    measured = {}
    for a in act_choices:
        say(f"  measuring every activation at {a} bits: build for {board} and profile")
        m = copy.deepcopy(model)
        distinct_channel_scales(m, example)
        apply_bits(m, [8] * len(quant_layers(m, example)), example)
        for _, q in act_layers(m, example):
            set_act_bits(q, a)
        d = Path(work) / f"uniform-a{a}"
        onnx = export_qonnx(m, example[:1], d / "model.onnx")
        res = build(onnx, target, board, d / "build", kernels=kernels)
        graph = Graph.load(res.out_dir)
        prof = profile(res.out_dir, count=1, write=False).to_json()
        measured[a] = {"nodes": node_costs(res.out_dir, res.manifest, graph, prof),
                       "order": [n.name for n in graph.nodes], "ram": res.manifest.memory["ram_bytes"]}
    order = measured[act_choices[0]]["order"]
    starts = [order.index(weight_nodes_ir[producer[r]]) for r in range(len(acts))]
    wpos = sorted(order.index(w) for w in weight_nodes_ir)
    per = {r: np.zeros((len(acts), len(act_choices))) for r in ("flash", "instructions", "cycles")}
    for r, st in enumerate(starts):
        end = next((p for p in wpos if p > st), len(order))
        owned = order[st:end]
        widest = measured[act_choices[0]]["nodes"]
        for k, a in enumerate(act_choices):
            for res_name in per:
                per[res_name][r, k] = sum(measured[a]["nodes"][n][res_name] - widest[n][res_name] for n in owned)
    return {"act_layers": [n for n, _ in acts], "per": per, "fed": fed, "producer": producer,
            "ram": max(v["ram"] for v in measured.values())}


def _layer_rows(builds: dict, bit_choices: tuple[int, ...], n: int) -> dict[str, np.ndarray]:
    per = {r: np.zeros((n, len(bit_choices))) for r in RESOURCES}
    for j, b in enumerate(bit_choices):
        for i, lay in enumerate(builds[b]["layers"]):
            per["flash"][i, j] = lay["weight_bytes"] + lay["code_bytes"]
            per["instructions"][i, j] = lay["instructions"]
            per["cycles"][i, j] = lay["cycles"]
            per["bops"][i, j] = lay["macs"] * b * lay["in_bits"]
    return per


def measure_costs(model, example: torch.Tensor, target: str, board: str, work: Path,
                  bit_choices: tuple[int, ...] = (8, 4, 2), kernels: str | None = None, say=print,
                  act_choices: tuple[int, ...] = ()) -> CostTable:
    """The :class:`CostTable` of ``model`` on ``board`` from one build per width (see the module doc);
    with ``act_choices`` (e.g. (8, 4), widest first) the activation quantizers' widths too.

    A width of 1 (binary weights) is offered only to the layers a binary kernel runs: they are
    built at 1 bit (the others at the widest width) and kept where the build selected a binary
    kernel (``binary_kernels``); the table's ``allowed`` mask and ``notes["binary"]`` (layer ->
    the kernel, or why not) say which. 1 is dropped from the choices when no layer takes it.

    With per-channel weight scales every width is built twice: with scales that differ per
    channel (``per_layer``: the per-channel requantization records a trained layer stores)
    and with the equal scales of the random weights (``per_layer_equal_scales``: one shift,
    what a layer whose channels' scales coincide stores); :func:`for_scales` picks per layer
    and width what a given checkpoint has."""
    names = [n for n, _ in quant_layers(model, example)]
    widest = max(bit_choices)
    per_channel = "per channel" in scale_granularity(model, example).values()

    def measure(tag: str, bits, distinct: bool = True) -> dict:
        sub = f"uniform-w{tag}" + ("" if distinct else "-equal-scales")
        return measure_uniform(model, example, target, board, Path(work) / sub, bits, kernels, distinct)

    builds, equal = {}, {}
    for b in [b for b in bit_choices if b != 1]:
        say(f"  measuring every layer at {b}-bit weights: build for {board} and profile"
            + (" (twice: distinct and equal per-channel scales)" if per_channel else ""))
        builds[b] = measure(str(b), b)
        if per_channel:
            equal[b] = measure(str(b), b, distinct=False)
    ref = builds[widest]
    if len(ref["layers"]) != len(names):
        raise EdgekitError(f"the built model has {len(ref['layers'])} weight layers, the Brevitas model "
                           f"{len(names)}; cannot attribute costs to layers")
    for lay, (name, mod) in zip(ref["layers"], quant_layers(model, example)):
        if lay["params"] != mod.weight.numel():
            raise EdgekitError(f"layer order differs between the build ({lay['node']}) and the model ({name})")
    binary_notes = {}
    if 1 in bit_choices:
        refusals = [lay["binary_refusal"] for lay in ref["layers"]]
        if (kernels or "optimized") == "reference":  # no build needed to know: every layer gets the reference kernel
            refusals = [r or "--kernels reference: binary weights would run on the reference kernel as 2-bit codes"
                        for r in refusals]
        offered = [r is None for r in refusals]
        if any(offered):
            say(f"  measuring {sum(offered)} layer(s) at 1-bit (binary) weights: build for {board} and profile")
            w1_bits = [1 if ok else widest for ok in offered]
            w1 = measure("1", w1_bits)
            kinds = binary_kernels()
            for i, lay in enumerate(w1["layers"]):
                if offered[i] and lay["kernel"] not in kinds:
                    offered[i] = False
                    refusals[i] = f"the build ran its binary weights on the {lay['kernel']} kernel, not a binary one" \
                        + (" (--kernels reference)" if (kernels or "optimized") == "reference" else "")
            if per_channel and any(offered):
                eq1 = measure("1", w1_bits, distinct=False)
                equal[1] = {**eq1, "layers": [lay if ok else equal[widest]["layers"][i] for i, (lay, ok)
                                              in enumerate(zip(eq1["layers"], offered))]}
            builds[1] = {**w1, "layers": [lay if ok else ref["layers"][i] for i, (lay, ok)
                                          in enumerate(zip(w1["layers"], offered))]}
        binary_notes = {name: {"node": ref["layers"][i]["node"], "offered": True,
                               "kernel": builds[1]["layers"][i]["kernel"]} if offered[i] else
                        {"node": ref["layers"][i]["node"], "offered": False, "reason": refusals[i]}
                        for i, name in enumerate(names)}
        if not any(offered):
            say("  1-bit weights not offered: no layer runs on a binary kernel")
            bit_choices = tuple(b for b in bit_choices if b != 1)
    per = _layer_rows(builds, bit_choices, len(names))
    jr = list(bit_choices).index(widest)
    base = {"flash": ref["flash"] - float(per["flash"][:, jr].sum()),
            "instructions": ref["instructions"] - float(per["instructions"][:, jr].sum()),
            "cycles": ref["cycles"] - float(per["cycles"][:, jr].sum()), "bops": 0.0}
    fixed = {"ram": float(max(b["ram"] for b in [*builds.values(), *equal.values()]))}
    notes = {"nodes": [lay["node"] for lay in ref["layers"]],
             "uniform": {b: {k: v for k, v in d.items() if k != "layers"} for b, d in builds.items()},
             "kernels": kernels or "optimized", "scales": scale_granularity(model, example)}
    if binary_notes:
        notes["binary"] = binary_notes
    table = CostTable(names, tuple(bit_choices), base, per, fixed, notes)
    if equal:
        table.per_layer_equal_scales = _layer_rows(equal, bit_choices, len(names))
        notes["uniform_equal_scales"] = {b: {k: v for k, v in d.items() if k != "layers"} for b, d in equal.items()}
    if 1 in bit_choices:
        allowed = np.ones((len(names), len(bit_choices)), bool)
        allowed[:, list(bit_choices).index(1)] = offered
        table.allowed = allowed
    if len(act_choices) > 1:
        act = measure_act_costs(model, example, target, board, Path(work), tuple(act_choices), notes["nodes"],
                                kernels, say)
        table.act_layers, table.act_choices = act["act_layers"], tuple(act_choices)
        table.act_per_layer, table.act_input = act["per"], act["fed"]
        table.macs = [float(lay["macs"]) for lay in ref["layers"]]
        table.fixed["ram"] = float(max(table.fixed["ram"], act["ram"]))
        notes["act_producer"] = act["producer"]
    return table


def equal_channel_scales(module, bits: int) -> bool:
    """Whether the layer's weights at ``bits`` have one scale (per tensor, or per channel
    with every channel's the same)."""
    from ..qat.hessian import set_weight_bits

    probe = copy.deepcopy(module)
    set_weight_bits(probe, bits)
    with torch.no_grad():
        s = probe.quant_weight().scale.detach().flatten()
    return bool((s == s[0]).all())


def for_scales(table: CostTable, model, example: torch.Tensor) -> CostTable:
    """``table`` with the costs of the scales ``model`` (a checkpoint) has: for each layer and
    width whose per-channel scales all coincide, the costs of the equal-scale build (one
    shift, no per-channel records); the others keep the distinct-scale costs. A table
    without per-channel rows comes back as it is."""
    if not table.per_layer_equal_scales:
        return table
    equal = np.array([[equal_channel_scales(m, b) for b in table.bit_choices]
                      for _, m in quant_layers(model, example)])
    out = copy.copy(table)
    out.per_layer = {r: np.where(equal, table.per_layer_equal_scales[r], v) for r, v in table.per_layer.items()}
    out.notes = {**table.notes, "equal_scales": equal.tolist()}
    return out


def cheapest_scales(table: CostTable) -> CostTable:
    """``table`` with each layer and width at the cheaper of its two scale patterns: what no
    checkpoint can undercut (for refusing budgets before any training)."""
    if not table.per_layer_equal_scales:
        return table
    out = copy.copy(table)
    out.per_layer = {r: np.minimum(v, table.per_layer_equal_scales[r]) for r, v in table.per_layer.items()}
    return out


def scale_granularity(model, example: torch.Tensor) -> dict[str, str]:
    """Per weight layer: "per channel" or "per tensor" weight scales."""
    return {name: "per channel" if m.quant_weight().scale.numel() > 1 else "per tensor"
            for name, m in quant_layers(model, example)}
