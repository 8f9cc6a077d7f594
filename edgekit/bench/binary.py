"""``edgekit bench binary``: the binary (1W1A) kernels' speed and flash on an emulated board, next to the int8
DSP kernels on the same layer shapes (docs/kernels.md, "Binary and ternary layers").

Each case is a small QONNX graph written here with onnx.helper: an 8-bit input quantizer and a first layer
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

DOMAIN = "qonnx.custom_op.general"
#: (name, kind, shape): dense (inputs, outputs); conv (channels in, out, kernel, input height and width)
CASES = (("dense 1024x1024", "dense", (1024, 1024)), ("conv 3x3 64->64 10x10", "conv", (64, 64, 3, 10)))


class _Graph:
    """QONNX nodes and initializers (onnx.helper), binary (BipolarQuant) or 8-bit (Quant) quantizers."""

    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.count = rng, [], [], 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), domain=domain, **attrs))
        return out

    def quant(self, x: str, binary: bool, scale: float = 2.0**-4) -> str:
        if binary:
            return self.node("BipolarQuant", [x, self.const(1.0)], domain=DOMAIN)
        return self.node("Quant", [x, self.const(scale), self.const(0.0), self.const(8.0)], domain=DOMAIN,
                         signed=1, narrow=1, rounding_mode="ROUND")

    def weights(self, shape, binary: bool) -> str:
        return self.quant(self.const(self.rng.normal(size=shape) * 0.1), binary, 2.0**-6)

    def activation(self, x: str, binary: bool) -> str:
        return self.quant(x, binary, 2.0**-3)


def case_model(path: Path, kind: str, shape: tuple, binary: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(np.random.default_rng(0))
    if kind == "dense":
        n_in, n_out = shape
        in_shape = [1, 64]
        x = g.quant("x", False)
        x = g.activation(g.node("MatMul", [x, g.weights((64, n_in), False)]), binary)
        x = g.activation(g.node("MatMul", [x, g.weights((n_in, n_out), binary)]), binary)
        width = n_out
    else:
        ci, co, k, hw = shape
        in_shape = [1, 8, hw, hw]
        x = g.quant("x", False)
        x = g.activation(g.node("Conv", [x, g.weights((ci, 8, 1, 1), False)], kernel_shape=[1, 1]), binary)
        x = g.activation(g.node("Conv", [x, g.weights((co, ci, k, k), binary)], kernel_shape=[k, k]), binary)
        width = co * (hw - k + 1) ** 2
        x = g.node("Flatten", [x], axis=1)
    y = g.node("MatMul", [x, g.weights((width, 10), False)])
    graph = helper.make_graph(g.nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 10])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run_binary(board: str = "mps2-an386", count: int = 8) -> list[dict]:
    """One row per case and weight form: the measured layer's kernel, MACs, instructions, instructions per
    MAC, weight flash bytes per weight, and whether every stage was bit-exact."""
    from ..api import build, profile, verify
    from ..ir.graph import Graph

    rows = []
    jobs = [(c, binary) for c in CASES for binary in (True, False)]
    with tempfile.TemporaryDirectory(prefix="ek_bench_binary_") as tmp:
        for (name, kind, shape), binary in track(jobs, "binary kernels"):
            work = Path(tmp) / f"{kind}_{'bin' if binary else 'int8'}"
            work.mkdir()
            out = work / "b"
            build(case_model(work / "m.onnx", kind, shape, binary), None, board, out)
            rep = verify(out, count=count)
            prof = profile(out, write=False).to_json()
            graph = Graph.load(out)
            layer = [n for n in graph.nodes if n.op in ("dense", "conv2d")][1]   # the measured layer
            weights = graph.constants[layer.inputs[1]].size
            row = next(r for r in prof["layers"] if r["name"] == layer.name)
            kernel = json.loads((out / "manifest.json").read_text())["kernel_variants"][layer.name]
            rows.append({"layer": name, "weights": "1-bit, 1-bit activations" if binary else "int8, int8 activations",
                         "kernel": kernel,
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
    if variant is not None and variant.__module__.endswith(".binary"):
        return variant.select(layer, graph, None).weight_bytes
    return graph.constants[layer.inputs[1]].size


def format_rows(rows: list[dict], board: str) -> str:
    lines = [f"edgekit bench binary: one layer per row, exact instructions on {board} (edgekit profile)",
             f"{'layer':<26}{'weights':<26}{'kernel':<18}{'MACs':>11}{'instructions':>14}{'instr/MAC':>11}"
             f"{'B/weight':>10}  bit-exact"]
    for r in rows:
        lines.append(f"{r['layer']:<26}{r['weights']:<26}{r['kernel']:<18}{r['macs']:>11,}{r['instructions']:>14,}"
                     f"{r['instructions_per_mac']:>11.3f}{r['weight_bytes_per_weight']:>10.3f}  "
                     f"{'yes' if r['bit_exact'] else 'NO'}")
    return "\n".join(lines)


@suite("binary")
def main(args) -> int:
    board = getattr(args, "board", None) or "mps2-an386"
    rows = run_binary(board, count=min(args.count, 16))
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows, board))
    return 0 if all(r["bit_exact"] for r in rows) else 1
