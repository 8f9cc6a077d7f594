"""The GEMM's fused residual add in its own assembly (kernels/conv2d_gemm.py ``asm_residual``,
templates/cortexm/ops_dsp/conv2d_gemm.c.j2 ``rq_asm``): after the conv's requantization to its int8 code y, the
add's rescaled residual from a table of the 256 residual codes, y shifted into the add's scale, and the add's
output requantization in the SMMLAR form, checked at build time against the add's arithmetic for every pair of
codes. ResNet blocks (conv -> conv + trunk, the add in place over the trunk, RELU/RELU6/no clamp) with int8
(size) and int16 (speed) weights, pixel counts that leave a partial last block, are bit-exact on the emulated
Cortex-M4 and M7 and compile at every optimization level."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import conv2d_gemm as gemm
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.frontends.tflite.writer import tflite
from edgekit.ir import contract
from helpers.codes import input_codes
from helpers.compile_levels import disassembly_at_every_level
from test_kernels_dsp import BOARDS, Chain, _check
from helpers.planned import planned_graph


def chain_block(seed: int) -> bytes:
    """conv 3x3 to 6..16 channels (the trunk) -> conv 3x3 RELU -> conv 3x3 + trunk (ADD with a random clamp, fused
    into the conv in place over the trunk) -> dense; odd map sizes leave a partial last block of 3 pixels."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.choice([5, 7])), int(rng.choice([5, 7, 8]))
    ch = Chain(rng, (h, w, int(rng.choice([3, 5]))), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([6, 8, 12, 16])), 3)
    trunk = (ch.x, ch.scale, ch.zp)
    ch.conv(ch.shape[2], 3, act=tflite.ActivationFunctionType.RELU).conv(ch.shape[2], 3).add_to(trunk)
    return ch.dense(int(rng.choice([5, 7]))).build()


def test_asm_residual_is_the_add_for_every_code_pair(tmp_path):
    """Where asm_residual applies, its table is the add's rescaled residual (doubled, less the conv's zero point
    rescaled) and its constants are doubled_constants of the add's output requantization; the C epilogue's
    table stays what residual_table computes (the size build's compact records take that path)."""
    reg = kernel_registry.registry()
    seen = 0
    for seed in range(4):
        graph, plan = planned_graph(chain_block(seed), tmp_path)
        for node in graph.nodes:
            if node.op != "conv2d" or not node.attrs.get("residual"):
                continue
            r = gemm.asm_residual(node, graph)
            assert r is not None, seed
            res, rq = node.attrs["residual"], node.attrs["requant"]
            rt = graph.tensors[node.inputs[3]]
            codes = np.arange(rt.qmin, rt.qmax + 1)
            b = contract.apply_requant(codes - rt.zero_point, res["in_requant"][1])
            k = r["shift"] - 1
            assert r["table"] == [int(v) for v in 2 * (b - (rq.zero_point << k))] and r["offset"] == -rt.qmin
            for name in ("conv2d_gemm", "conv2d_gemm_int8"):
                d = reg.get(name).select(node, graph, plan).ctx
                assert d["asm_rq"]["res"] == r and "in the assembly" in d["summary"]
                # the stream: per channel pair the biases, K k-pair words, 6 record words, the add's M and K
                words = np.array(d["w_words"]).reshape(d["oc_pad"] // 2, -1)
                assert words.shape[1] == 2 + d["kwords"] * (1 if d["int8_weights"] else 2) + 8 and (words[:, -2:] == [r["m"], r["k"]]).all()
                seen += 1
    assert seen >= 8


def test_not_taken_where_the_add_rescales_the_conv_output_by_more_than_a_shift(tmp_path):
    """An add whose rescaling of the conv's code is not a power of two keeps the C epilogue (None)."""
    import dataclasses

    graph, _ = planned_graph(chain_block(0), tmp_path)
    node = next(n for n in graph.nodes if n.attrs.get("residual"))
    assert gemm.asm_residual(node, graph) is not None
    ra, rb = node.attrs["residual"]["in_requant"]
    odd = dataclasses.replace(ra, multiplier=(ra.multiplier[0] * 3 // 4 + 1,))
    node.attrs["residual"] = {**node.attrs["residual"], "in_requant": [odd, rb]}
    assert gemm.asm_residual(node, graph) is None


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("seed,optimize", [(0, "speed"), (1, "size"), (2, "size"), (4, "speed")])
def test_resnet_blocks_bit_exact(seed, optimize, target, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"r{seed}.tflite"
    model.write_bytes(chain_block(seed))
    out = tmp_path / "b"
    res = build(model, target, BOARDS[target], out, optimize=optimize)
    kernels = {r["name"]: r.get("kernel", "") for r in res.manifest.to_json()["layers"]}
    add = next(k for k in kernels.values() if "fused residual add" in k)
    # compact records (size, K of COMPACT_RECORD_MIN_KWORDS k-pairs on) keep the C epilogue
    assert ("in the assembly" in add) != ("compact requantization records" in add), kernels
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 30, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, set(), weights="int8" if optimize == "size" else "int16")
    if target == "cortex-m4" and seed in (0, 1):
        for flags, dis in disassembly_at_every_level(out, tmp_path).items():
            assert ("smmlar" in dis) == (flags != ("-O0",)), flags
