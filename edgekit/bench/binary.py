"""``edgekit bench binary``: the binary (1W1A) kernels' speed and flash on an emulated board, next to the int8
DSP kernels on the same layer shapes (docs/kernels.md, "Binary and ternary layers").

Each case is a small QONNX graph (``frontends/qonnx_writer.py``): an 8-bit input quantizer and a first layer
(int8 activations), the measured layer, a last dense layer. The measured layer has binary weights and binary
(sign) activations, or 8-bit weights and activations for the int8 row. Every build is verified bit-exact
(simulator, qonnx, host, firmware) and profiled: exact instructions of the measured layer per MAC, and its
weights' flash bytes per weight.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..progress import track
from .suites import suite

#: (name, kind, shape): dense (inputs, outputs); conv (channels in, out, kernel, input height and width)
CASES = (("dense 1024x1024", "dense", (1024, 1024)), ("conv 3x3 64->64 10x10", "conv", (64, 64, 3, 10)))
INPUT_SCALE, WEIGHT_SCALE, ACT_SCALE = 2.0**-4, 2.0**-6, 2.0**-3


def case_model(path: Path, kind: str, shape: tuple, binary: bool) -> Path:
    """The case's graph: an 8-bit input, a first int8 layer, the measured layer (binary weights and sign
    activations, or 8-bit both), a last int8 dense layer of 10 outputs."""
    from ..frontends.qonnx_writer import GraphBuilder

    rng = np.random.default_rng(0)

    def activation(b: GraphBuilder, is_binary: bool) -> GraphBuilder:
        return b.sign() if is_binary else b.q(ACT_SCALE, 8, narrow=True)

    def weights(size) -> np.ndarray:
        return rng.normal(size=size) * 0.1

    if kind == "dense":
        n_in, n_out = shape
        b = GraphBuilder(64).q(INPUT_SCALE, 8, narrow=True)
        activation(b.dense(weights((64, n_in)), WEIGHT_SCALE, 8), binary)
        activation(b.dense(weights((n_in, n_out)), 1.0 if binary else WEIGHT_SCALE, None if binary else 8), binary)
    else:
        ci, co, k, hw = shape
        b = GraphBuilder(8 * hw * hw, input_shape=(8, hw, hw)).q(INPUT_SCALE, 8, narrow=True)
        activation(b.conv(weights((ci, 8, 1, 1)), WEIGHT_SCALE, 8), binary)
        activation(b.conv(weights((co, ci, k, k)), 1.0 if binary else WEIGHT_SCALE, None if binary else 8), binary)
        b.flatten(co * (hw - k + 1) ** 2)
    return b.dense(weights((b.width_now, 10)), WEIGHT_SCALE, 8).save(path)


def run_binary(board: str = "mps2-an386", count: int = 8) -> list[dict]:
    """One row per case and weight form: the measured layer's kernel, MACs, instructions, instructions per
    MAC, weight flash bytes per weight, and whether every stage was bit-exact."""
    from ..api import build, profile, verify
    from ..errors import EdgekitError
    from ..ir.graph import Graph

    rows = []
    jobs = [(c, binary) for c in CASES for binary in (True, False)]
    with tempfile.TemporaryDirectory(prefix="ek_bench_binary_") as tmp:
        for (name, kind, shape), binary in track(jobs, "binary kernels"):
            work = Path(tmp) / f"{kind}_{'bin' if binary else 'int8'}"
            work.mkdir()
            out = work / "b"
            form = "1-bit, 1-bit activations" if binary else "int8, int8 activations"
            try:
                build(case_model(work / "m.onnx", kind, shape, binary), None, board, out)
            except EdgekitError as e:
                if binary or "does not fit" not in str(e):
                    raise
                # the int8 comparison may not fit a small board's flash (1 MB of int8 weights on the M55's 512 KB)
                rows.append({"layer": name, "weights": form, "kernel": None, "skipped": f"does not fit {board}"})
                continue
            rep = verify(out, count=count)
            prof = profile(out, write=False).to_json()
            graph = Graph.load(out)
            layer = [n for n in graph.nodes if n.op in ("dense", "conv2d")][1]   # the measured layer
            weights = graph.constants[layer.inputs[1]].size
            row = next(r for r in prof["layers"] if r["name"] == layer.name)
            kernel = json.loads((out / "manifest.json").read_text())["kernel_variants"][layer.name]
            rows.append({"layer": name, "weights": form, "kernel": kernel,
                         "macs": row["macs"], "instructions": row["instructions"],
                         "instructions_per_mac": round(row["instructions"] / row["macs"], 3),
                         "weight_bytes_per_weight": round(_weight_bytes(kernel, layer, graph) / weights, 4),
                         "bit_exact": bool(rep.ok)})
    return rows


def _weight_bytes(kernel: str, layer, graph) -> int:
    """Flash bytes of the layer's weights as its kernel stores them: the binary kernels' packed words, else
    the int8 codes (the int8 DSP kernels keep one byte per weight, plus a few padding rows)."""
    from ..backends.cortexm.kernels.registry import registry

    variant = registry().get(kernel)
    if variant is not None and getattr(variant, "bit_packed", False):
        return variant.select(layer, graph, None).weight_bytes
    return graph.constants[layer.inputs[1]].size


def format_rows(rows: list[dict], board: str) -> str:
    lines = [f"edgekit bench binary: one layer per row, exact instructions on {board} (edgekit profile)",
             f"{'layer':<26}{'weights':<26}{'kernel':<18}{'MACs':>11}{'instructions':>14}{'instr/MAC':>11}"
             f"{'B/weight':>10}  bit-exact"]
    for r in rows:
        if r["kernel"] is None:
            lines.append(f"{r['layer']:<26}{r['weights']:<26}{r['skipped']}")
            continue
        lines.append(f"{r['layer']:<26}{r['weights']:<26}{r['kernel']:<18}{r['macs']:>11,}{r['instructions']:>14,}"
                     f"{r['instructions_per_mac']:>11.3f}{r['weight_bytes_per_weight']:>10.3f}  "
                     f"{'yes' if r['bit_exact'] else 'NO'}")
    return "\n".join(lines)


@suite("binary")
def main(args) -> int:
    board = getattr(args, "board", None) or "mps2-an386"
    rows = run_binary(board, count=min(args.count, 16))
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows, board))
    return 0 if all(r["bit_exact"] for r in rows if r["kernel"] is not None) else 1
