"""``edgekit nas --bits hawq``: a candidate's weight bit widths from Hessian-aware allocation
(HAWQ-V2 sensitivity, HAWQ-V3 integer linear program) instead of drawn by the sampler.

The sampler draws the architecture with 8-bit weights. The trial then

1. builds the untrained model for the board with every weight at 8, 4 and 2 bits: per
   **group** (a block: its convolution, or both convolutions of a depthwise-separable
   block; the head: its dense layers) the flash of its weight arrays and code as the
   build stores them (:func:`layer_flash`), and its predicted instructions and cycles
   (the search's calibrated cost model on that build's layers and kernel choices);
2. trains at 8 bits (early stopping, as every trial), estimates each quantized layer's
   Hessian trace by Hutchinson's method on a calibration subset, and sums the HAWQ-V2
   sensitivities of a group's layers;
3. picks one width per group minimising the summed sensitivity within the flash and
   latency budgets (``edgekit.qat.mixed_precision_alloc.allocate``, scipy milp / HiGHS),
   sets it and fine-tunes (early stopping, a third of the epochs, at least 2).

The trial's architecture (``w_bits`` per block, ``head_bits``) records the chosen widths,
so the report, the export and a retraining see them. RAM does not depend on weight widths
(activations keep theirs). The trial's recorded memory figures are, as always, those of the
final build; its latency the cost model's.
"""
from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import EdgekitError

BIT_CHOICES = (8, 4, 2)
HAWQ = "hawq"


def weight_nodes(graph) -> list:
    """The IR nodes that carry weights (conv and dense), in execution order."""
    return [n for n in graph.nodes if n.op in ("conv2d", "dense") and len(n.inputs) > 1
            and n.inputs[1] in graph.constants]


def layer_flash(build_dir: Path, manifest, graph) -> list[dict]:
    """Per weight node of a build: the bytes of its weight and bias arrays as stored (the
    manifest's ``weight_symbols``: packed codes under the reference kernels, int8/int16
    copies under the DSP kernels) and of its own generated functions in the firmware ELF."""
    from ..backends.cortexm import toolchain as tc

    wsyms = {s["symbol"]: s["bytes"] for s in manifest.memory_breakdown["weight_symbols"]}
    elf_syms = tc.symbols(Path(build_dir) / manifest.firmware)
    rows = []
    for n in weight_nodes(graph):
        # arrays: ek_<node>_weight/_bias (reference) or ek_layerN_<node>_w/_wt/_b/... (optimized);
        # code: ek_layerN_<node> plus any ek_layerN_<node>_<helper> (kernels are specialised per layer)
        own = re.compile(rf"^ek_(?:layer\d+_)?{re.escape(n.name)}_[a-z]\w*$")
        fn = re.compile(rf"^ek_layer\d+_{re.escape(n.name)}(?:_[a-z]\w*)?$")
        weight_bytes = sum(v for k, v in wsyms.items() if own.match(k))
        if not weight_bytes:
            raise EdgekitError(f"build in {build_dir}: no weight array found for {n.name}")
        code_bytes = sum(s["size"] for s in elf_syms if s["type"] in "tT" and fn.match(s["name"]))
        rows.append({"node": n.name, "weight_bytes": weight_bytes, "code_bytes": code_bytes,
                     "params": int(np.prod(graph.tensors[n.inputs[1]].shape)),
                     "in_bits": int(graph.tensors[n.inputs[0]].bits)})
    return rows


def layer_groups(arch) -> list[int]:
    """Group index of every weight-quantized layer in execution order: one group per block
    (a depthwise-separable block has two layers), the head's dense layers the last group."""
    groups = []
    for i, b in enumerate(arch.blocks):
        groups += [i] * (1 if b.kind == "conv" else 2)
    groups += [len(arch.blocks)] * (2 if arch.head_hidden else 1)
    return groups


def with_bits(arch, group_bits: list[int]):
    """``arch`` with block i's weights at ``group_bits[i]`` and the head's at the last entry."""
    blocks = tuple(replace(b, w_bits=int(w)) for b, w in zip(arch.blocks, group_bits))
    return replace(arch, blocks=blocks, head_bits=int(group_bits[-1]))


def cost_table(model, arch, example, config, cost, work: Path, say=lambda *_: None):
    """The :class:`~edgekit.qat.CostTable` of the trial's groups (flash measured on builds at
    uniform 8/4/2-bit weights, instructions and cycles predicted by the cost model on each
    build); the per-width builds go to ``work/w<bits>``."""
    from ..api import build
    from ..ir.graph import Graph
    from ..qat import CostTable, export_qonnx
    from ..qat.mixed_precision_alloc import apply_bits

    groups = layer_groups(arch)
    n_g = max(groups) + 1
    per = {r: np.zeros((n_g, len(BIT_CHOICES))) for r in ("flash", "instructions", "cycles")}
    totals, ram = {}, 0
    for j, bits in enumerate(BIT_CHOICES):
        m = copy.deepcopy(model)
        apply_bits(m, [bits] * len(groups), example)
        d = Path(work) / f"w{bits}"
        onnx = export_qonnx(m, example[:1], d / "model.onnx")
        res = build(onnx, config.target, config.board, d / "build")
        graph = Graph.load(res.out_dir)
        rows = layer_flash(res.out_dir, res.manifest, graph)
        if len(rows) != len(groups):
            raise EdgekitError(f"the build has {len(rows)} weight layers, the architecture {len(groups)}")
        pred = cost.predict_build(res.out_dir)
        pred_by = {r["name"]: r for r in pred["layers"]}
        for g, row in zip(groups, rows):
            per["flash"][g, j] += row["weight_bytes"] + row["code_bytes"]
            per["instructions"][g, j] += pred_by[row["node"]]["instructions"]
            per["cycles"][g, j] += pred_by[row["node"]]["cycles"]
        totals[bits] = {"flash": res.manifest.memory["flash_bytes"], "instructions": pred["instructions"],
                        "cycles": pred["cycles"]}
        ram = max(ram, res.manifest.memory["ram_bytes"])
    j8 = BIT_CHOICES.index(8)
    base = {r: float(totals[8][r] - per[r][:, j8].sum()) for r in per}
    names = [f"block{i}" for i in range(len(arch.blocks))] + ["head"]
    return CostTable(names, BIT_CHOICES, base, per, {"ram": float(ram)}, {"uniform": totals})


def ilp_budgets(budget, clock_hz: float) -> dict:
    """The search's budgets in the cost table's units (RAM is checked as it is)."""
    out = {"flash": budget.max_flash, "ram": budget.max_ram}
    if budget.max_latency_ms is not None:
        out["cycles"] = budget.max_latency_ms * clock_hz / 1e3
    return {k: v for k, v in out.items() if v is not None}


def group_sensitivity(model, arch, x, y, probes: int = 8, seed: int = 0):
    """HAWQ-V2 sensitivity per group and width (the sum over the group's layers) and the
    per-layer Hessian traces."""
    import torch

    from ..qat.hessian import hutchinson_traces, quant_layers, sensitivities

    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    layers = quant_layers(model, xt[:1])
    traces = hutchinson_traces(model, xt, yt, probes=probes, seed=seed, layers=layers)
    omega_l = sensitivities(layers, traces, BIT_CHOICES)
    groups = layer_groups(arch)
    omega = np.zeros((max(groups) + 1, len(BIT_CHOICES)))
    for g, row in zip(groups, omega_l):
        omega[g] += row
    return omega, traces


def apply_group_bits(model, arch, group_bits: list[int], example) -> None:
    from ..qat.mixed_precision_alloc import apply_bits

    apply_bits(model, [group_bits[g] for g in layer_groups(arch)], example)
