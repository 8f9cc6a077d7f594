"""A QONNX MLP written node by node from fixed integer weights and power-of-two scales.

Unlike the Brevitas MLPs in brevitas_models.py it depends on nothing random and on no
training library: the same file, hence the same generated C and the same firmware, on
every machine with the same compiler. Used where tests assert exact instruction counts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _quant(helper, numpy_helper, name: str, x: str, scale: float, bits: int, signed: bool, narrow: bool,
           inits: list) -> tuple:
    s, z, b = f"{name}_scale", f"{name}_zp", f"{name}_bits"
    inits += [numpy_helper.from_array(np.array(scale, np.float32), s),
              numpy_helper.from_array(np.array(0.0, np.float32), z),
              numpy_helper.from_array(np.array(float(bits), np.float32), b)]
    node = helper.make_node("Quant", [x, s, z, b], [f"{name}_out"], name=name, domain="qonnx.custom_op.general",
                            narrow=int(narrow), signed=int(signed), rounding_mode="ROUND")
    return node, f"{name}_out"


def fixed_mlp(path: Path, sizes=(16, 12, 8, 4)) -> Path:
    """Input -> Quant(int8, 2^-4) -> [Gemm + Relu + Quant(uint8)]* -> Gemm -> Quant(int8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    q, x = _quant(helper, numpy_helper, "in_q", "x", 2.0 ** -4, 8, True, False, inits)
    nodes.append(q)
    s_in = 2.0 ** -4
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        o, i = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
        w_codes = ((o * 7 + i * 3 + layer) % 15) - 7                     # in [-7, 7]
        b_codes = ((np.arange(n_out) * 5 + layer) % 11 - 5) * 16       # multiples of 16
        s_w = 2.0 ** -5
        inits.append(numpy_helper.from_array((w_codes * s_w).astype(np.float32), f"w{layer}"))
        inits.append(numpy_helper.from_array((b_codes * s_in * s_w).astype(np.float32), f"b{layer}"))
        qw, w = _quant(helper, numpy_helper, f"w{layer}_q", f"w{layer}", s_w, 8, True, True, inits)
        qb, b = _quant(helper, numpy_helper, f"b{layer}_q", f"b{layer}", s_in * s_w, 32, True, False, inits)
        gemm = helper.make_node("Gemm", [x, w, b], [f"gemm{layer}"], name=f"Gemm_{layer}", transB=1)
        nodes += [qw, qb, gemm]
        last = layer == len(sizes) - 2
        if last:
            qo, x = _quant(helper, numpy_helper, "out_q", f"gemm{layer}", 2.0 ** -2, 8, True, False, inits)
            nodes.append(qo)
        else:
            relu = helper.make_node("Relu", [f"gemm{layer}"], [f"relu{layer}"], name=f"Relu_{layer}")
            qa, x = _quant(helper, numpy_helper, f"act{layer}_q", f"relu{layer}", 2.0 ** -3, 8, False, False, inits)
            nodes += [relu, qa]
            s_in = 2.0 ** -3
    graph = helper.make_graph(nodes, "fixed_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 2)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return Path(path)
