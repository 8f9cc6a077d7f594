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
from pathlib import Path

import numpy as np
import torch

from ..errors import EdgekitError
from ..nas.hawq import layer_flash
from ..qat import CostTable, export_qonnx
from ..qat.hessian import quant_layers
from ..qat.mixed_precision_alloc import apply_bits

RESOURCES = ("flash", "instructions", "cycles", "bops")


def measure_uniform(model, example: torch.Tensor, target: str, board: str, work: Path, bits: int,
                    kernels: str | None = None) -> dict:
    """Build and profile ``model`` with every layer at ``bits``: per-layer and total costs."""
    from ..api import build
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph

    m = copy.deepcopy(model)
    apply_bits(m, [bits] * len(quant_layers(m, example)), example)
    work.mkdir(parents=True, exist_ok=True)
    onnx = export_qonnx(m, example[:1], work / "model.onnx")
    res = build(onnx, target, board, work / "build", kernels=kernels)
    man = res.manifest
    graph = Graph.load(res.out_dir)
    prof = profile(res.out_dir, count=1, write=False).to_json()
    per = {r["name"]: r for r in prof["layers"]}
    macs = {row["name"]: row["macs"] for row in man.layers}
    layers = []
    for row in layer_flash(res.out_dir, man, graph):
        n = row["node"]
        layers.append({**row, "instructions": per[n]["instructions"], "cycles": per[n]["est_cycles"],
                       "macs": macs.get(n, 0)})
    return {"bits": bits, "build_dir": str(res.out_dir), "kernel_variants": man.kernel_variants,
            "flash": man.memory["flash_bytes"], "ram": man.memory["ram_bytes"],
            "instructions": prof["total"]["instructions"], "cycles": prof["total"]["est_cycles"],
            "clock_hz": prof.get("clock_hz"), "layers": layers}


def measure_costs(model, example: torch.Tensor, target: str, board: str, work: Path,
                  bit_choices: tuple[int, ...] = (8, 4, 2), kernels: str | None = None, say=print) -> CostTable:
    """The :class:`CostTable` of ``model`` on ``board`` from one build per width (see the module doc)."""
    names = [n for n, _ in quant_layers(model, example)]
    builds = {}
    for b in bit_choices:
        say(f"  measuring every layer at {b}-bit weights: build for {board} and profile")
        builds[b] = measure_uniform(model, example, target, board, Path(work) / f"uniform-w{b}", b, kernels)
    ref = builds[max(bit_choices)]
    if len(ref["layers"]) != len(names):
        raise EdgekitError(f"the built model has {len(ref['layers'])} weight layers, the Brevitas model "
                           f"{len(names)}; cannot attribute costs to layers")
    for lay, (name, mod) in zip(ref["layers"], quant_layers(model, example)):
        if lay["params"] != mod.weight.numel():
            raise EdgekitError(f"layer order differs between the build ({lay['node']}) and the model ({name})")
    per = {r: np.zeros((len(names), len(bit_choices))) for r in RESOURCES}
    for j, b in enumerate(bit_choices):
        for i, lay in enumerate(builds[b]["layers"]):
            per["flash"][i, j] = lay["weight_bytes"] + lay["code_bytes"]
            per["instructions"][i, j] = lay["instructions"]
            per["cycles"][i, j] = lay["cycles"]
            per["bops"][i, j] = lay["macs"] * b * lay["in_bits"]
    jr = list(bit_choices).index(max(bit_choices))
    base = {"flash": ref["flash"] - float(per["flash"][:, jr].sum()),
            "instructions": ref["instructions"] - float(per["instructions"][:, jr].sum()),
            "cycles": ref["cycles"] - float(per["cycles"][:, jr].sum()), "bops": 0.0}
    fixed = {"ram": float(max(b["ram"] for b in builds.values()))}
    notes = {"nodes": [lay["node"] for lay in ref["layers"]],
             "uniform": {b: {k: v for k, v in d.items() if k != "layers"} for b, d in builds.items()},
             "kernels": kernels or "optimized"}
    return CostTable(names, tuple(bit_choices), base, per, fixed, notes)
