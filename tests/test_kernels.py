"""The Cortex-M kernel variant registry (edgekit/backends/cortexm/kernels/): discovery, refusal
of a duplicate name, per-node selection, and each variant on the nodes it claims.

The bit-exactness of the optimized kernels is tests/test_kernels_dsp.py's; here every variant
is asked about the nodes of random TFLite chains (that module's builders) directly.
"""
from __future__ import annotations

import sys
import textwrap

import pytest

from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.backends.cortexm.kernels.base import Selection
from edgekit.errors import EdgekitError
from edgekit.nas import cost
from edgekit.resources import resource_dir

VARIANTS = {"reference", "conv2d_gemm", "conv2d_gemm_int8", "conv2d_gemm_int8_shared", "dw3", "dw3_int8", "dw3_wide",
            "dw3_int8_ram", "dw3_compact", "dwk", "dwk_int8", "dense", "dense_int8", "dense_asm", "dense_asm_int8", "mve_gemm",
            "mve_dense", "mve_dw", "mve_dwc", "dense_xnor", "dense_binary", "conv_xnor", "mve_dense_xnor",
            "mve_conv_xnor", "gap_dsp", "conv2d_fewch", "conv2d_fewch_int8",
            "conv1x1_add", "conv1x1_add_int8", "conv2d_gemm_straight", "conv2d_gemm_2x2"}
VARIANTS |= {"conv2d_gemm_packed", "dense_packed", "mve_gemm_packed", "mve_dense_packed"}  # packed 4- and 2-bit weights (tests/test_kernels_packed.py)
VARIANTS |= {"conv2d_gemm_widen"}  # int8 weights widened per call into free arena bytes (tests/test_kernels_gemm_widen.py)


def _graph(chain: str, seed: int, tmp_path, fuse: bool = True):
    """An IR graph (after the default passes) and its memory plan, from a test_kernels_dsp chain (or
    test_kernels_edges' global average pool, chain "gap", or its ResNet shortcut, chain "shortcut")."""
    from test_kernels_dsp import CHAINS
    from test_kernels_edges import gap_model, shortcut_chain
    from test_kernels_gemm_shared import chain_shared

    CHAINS = {**CHAINS, "s": chain_shared}
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    path = tmp_path / f"{chain}{seed}.tflite"
    edges = {"gap": lambda: gap_model(seed, 5, 4, 22), "shortcut": lambda: shortcut_chain(seed, (6, 6, 8), 8, 2)}
    path.write_bytes(edges[chain]() if chain in edges else CHAINS[chain](seed))
    graph, _ = import_tflite(path)
    run_default_passes(graph)
    return graph, plan_memory(graph, fuse=fuse)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("kernels")
    # a: conv, depthwise 3x3, 1x1, dense; b: dilation, depth multipliers, a fused residual; d: other depthwise;
    # s: GEMM layers whose blocks share the widened weights
    # a(0) unfused too: its depthwise layer then has the arena gap dw3_int8_ram needs
    return [_graph(c, s, d) for c, s in (("a", 0), ("b", 2), ("d", 6), ("gap", 0), ("shortcut", 0), ("s", 0))] + \
        [_graph("a", 0, d, fuse=False)]


def test_every_variant_module_is_discovered_once():
    reg = kernel_registry.registry()
    assert {v.name for v in reg.all()} == VARIANTS
    templates = resource_dir("templates") / "cortexm"
    for v in reg.all():
        assert reg.origin(v.name).startswith("edgekit.backends.cortexm.kernels.")
        if v.template:
            assert (templates / v.template).is_file(), v.template
    # the reference kernel is the fallback, never tried as an optimized variant
    # bit-packed binary weights first (their layers' weights are stored for them; Helium's before the portable
    # ones), then Helium before DSP
    assert {v.name for v in reg.by_priority()[:2]} == {"mve_dense_xnor", "mve_conv_xnor"}
    assert {v.name for v in reg.by_priority()[2:5]} == {"dense_xnor", "dense_binary", "conv_xnor"}
    assert {v.name for v in reg.by_priority()[5:11]} == {"mve_dwc", "mve_dw", "mve_gemm", "mve_dense", "mve_gemm_packed",
                                                         "mve_dense_packed"}
    assert "reference" not in [v.name for v in reg.by_priority()]


def test_a_duplicate_variant_name_is_refused_naming_both_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "ek_dup_kernels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = textwrap.dedent("""
        from edgekit.backends.cortexm.kernels.reference import Reference
        from edgekit.backends.cortexm.kernels.dense import DenseDsp
        VARIANTS = ({}(),)
    """)
    (pkg / "first.py").write_text(body.format("Reference"))
    (pkg / "second.py").write_text(body.format("DenseDsp"))
    (pkg / "third.py").write_text(body.format("DenseDsp"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EdgekitError, match=r"'dense' is registered twice: in ek_dup_kernels\.second and in "
                                           r"ek_dup_kernels\.third"):
        kernel_registry.discover("ek_dup_kernels")
    (pkg / "third.py").unlink()
    sys.modules.pop("ek_dup_kernels.third", None)
    assert {v.name for v in kernel_registry.discover("ek_dup_kernels").all()} == {"reference", "dense"}
    reg = kernel_registry.Registry()
    reg.add(kernel_registry.registry().get("dw3"), "here")
    with pytest.raises(EdgekitError, match="'dw3' is registered twice: in here and in there"):
        reg.add(kernel_registry.registry().get("dw3"), "there")

    class Dw3Again(type(kernel_registry.registry().get("dw3"))):
        name = "dw3_again"

    with pytest.raises(EdgekitError, match="kind 'dw3' of kernel variant 'dw3_again' .* also declared by 'dw3'"):
        reg.add(Dw3Again(), "there")


def test_each_variant_takes_the_nodes_it_claims(graphs):
    """Every optimized variant takes at least one node of the chains: its layout is its own kind
    with its template and a non-empty weight stream, and its cost features are the ones it
    declares; nodes it does not claim are never handed to it."""
    reg = kernel_registry.registry()
    taken = {v.name: 0 for v in reg.by_priority()}
    for graph, plan in graphs:
        for node in graph.nodes:
            for v in reg.by_priority():
                if node.op not in v.ops or not v.claims(node) or v.refusal(node, graph, plan) is not None:
                    continue
                s = v.select(node, graph, plan)
                assert isinstance(s, Selection) and s.kind == v.name and s.optimized and s.template == v.template
                # a layer without weights (pooling) stores none
                assert (s.weight_bytes > 0 or len(node.inputs) == 1) and v.flash_bytes(s, node, graph) >= 0
                manifest = {"memory_plan": plan.to_json(), "kernel_variants": {node.name: v.name}}
                info = next(i for i in cost.layer_info(graph, manifest) if i["name"] == node.name)
                kind, f = cost.features(info)
                assert kind in v.cost_kinds and set(v.cost_kinds[kind]) <= set(f), (v.name, kind)
                assert cost.kind_chain(kind, info)[-1] == kind
                taken[v.name] += 1
    assert all(taken.values()), {k: n for k, n in taken.items() if not n}


def test_selection_by_core_and_the_reasons_for_the_reference(graphs):
    reg = kernel_registry.registry()
    graph, plan = graphs[0]
    kinds = {}
    for feats in ((), ("dsp",), ("dsp", "mve")):
        for optimize in ("size", "balanced", "speed"):
            kinds[feats, optimize] = [reg.select(n, graph, plan, feats, "optimized", optimize) for n in graph.nodes
                                      if n.op in ("conv2d", "dense")]
    for optimize in ("size", "balanced", "speed"):
        assert {s.describe() for s in kinds[(), optimize]} == {"reference (core without the DSP extension)"}
        mve = [s.kind for s in kinds[("dsp", "mve"), optimize]]
        # the Helium depthwise kernel keeps int8 weights in every mode
        assert mve[:3] == ["mve_gemm", "mve_dw", "mve_gemm"] and mve[-1] == "mve_dense"
    # size and balanced keep the weights at int8; speed widens them to int16
    for optimize in ("size", "balanced"):
        dsp = [s.kind for s in kinds[("dsp",), optimize]]
        # chain a(0)'s first convolution (3 input channels) runs row-fused with the depthwise after it, on the
        # few-channel kernel over pixel ranges; the depthwise layer: int8 records, widened into the arena where a
        # gap holds them (dw3_int8_ram); dense layers with TFLite's double rounding: the generated assembly loop
        # (dense_asm_int8); the 1x1 after it: balanced widens its int8 weights per call into a free arena gap
        # (conv2d_gemm_widen), size keeps them as they are
        gemm = "conv2d_gemm_widen" if optimize == "balanced" else "conv2d_gemm_int8"
        assert dsp[0] == "conv2d_fewch_int8" and dsp[2] == gemm and dsp[1] in ("dw3_int8", "dw3_int8_ram")
        assert dsp[-2:] == ["dense_asm_int8"] * 2
    dsp = [s.kind for s in kinds[("dsp",), "speed"]]
    # the depthwise 3x3 layer (depth multiplier 1, TFLite double rounding): dw3_int8's loop on int16 records
    assert dsp[:3] == ["conv2d_fewch", "dw3_wide", "conv2d_gemm"] and dsp[-2:] == ["dense_asm", "dense_asm"]
    assert [s.kind for s in kinds[("dsp",), "balanced"]] == [reg.select(n, graph, plan, ("dsp",), "optimized").kind
                                                            for n in graph.nodes if n.op in ("conv2d", "dense")]
    node = graph.nodes[0]
    assert reg.select(node, graph, plan, ("dsp",), "reference").describe() == "reference (--kernels reference)"
    relu_like = [n for n in graph.nodes if n.op not in ("conv2d", "dense")]
    assert all(reg.select(n, graph, plan, ("dsp",), "optimized").kind == "reference" for n in relu_like)


def test_dense_variant_refuses_fewer_than_four_inputs(graphs):
    """With no whole k-quad its weight array would be empty (issue 17, bug 2)."""
    reg = kernel_registry.registry()
    graph, plan = graphs[0]
    node = next(n for n in graph.nodes if n.op == "dense")
    w = graph.constants[node.inputs[1]]
    graph.constants[node.inputs[1]] = w[:, :3]
    try:
        for name in ("dense", "dense_int8", "dense_asm", "dense_asm_int8"):
            assert reg.get(name).refusal(node, graph, plan) == "fewer than 4 inputs"
        for optimize in ("balanced", "speed"):
            assert (reg.select(node, graph, plan, ("dsp",), "optimized", optimize).describe()
                    == "reference (fewer than 4 inputs)")
    finally:
        graph.constants[node.inputs[1]] = w


@pytest.mark.parametrize("int16_name,int8_name", [("conv2d_gemm", "conv2d_gemm_int8"), ("dense", "dense_int8")])
def test_int8_weight_variants_store_one_byte_per_weight(graphs, int16_name, int8_name):
    """The int8-weight variants keep the int16 variants' accumulation order: widening each weight
    word with SXTB16 (bytes 0 and 2) and SXTB16 ROR #8 (bytes 1 and 3) gives exactly the int16
    variant's pair words; their flash is one byte per weight, the int16 ones' two."""
    import numpy as np

    from edgekit.backends.cortexm.kernels.common import pair_words

    def sxtb16(words, ror, scale=1):
        b = [(np.asarray(words, np.int64) >> (8 * ((k + ror) % 4))) & 0xFF for k in (0, 2)]
        lo, hi = [scale * np.where(x >= 128, x - 256, x) for x in b]
        return pair_words(lo, hi)

    reg = kernel_registry.registry()
    v16, v8 = reg.get(int16_name), reg.get(int8_name)
    seen = 0
    for graph, plan in graphs:
        for node in graph.nodes:
            if node.op not in v8.ops or not v8.claims(node) or v8.refusal(node, graph, plan) is not None:
                continue
            s16, s8 = v16.select(node, graph, plan), v8.select(node, graph, plan)
            w = graph.constants[node.inputs[1]]
            assert s8.ctx["int8_weights"] and not s16.ctx["int8_weights"]
            assert s8.kind == int8_name and "int8 weights" in s8.describe() and "int16 weights" in s16.describe()
            w16, w8 = np.array(s16.ctx["w_words"]), np.array(s8.ctx["w_words"])
            if int16_name == "conv2d_gemm":
                # per channel pair: 2 biases, one word per k-pair (int8) or two (int16), 6 requant words or none
                kwords, pairs = s8.ctx["kwords"], s8.ctx["oc_pad"] // 2
                rec = (len(w8) // pairs) - 2 - kwords
                assert rec in (0, 6, 8) and len(w16) == pairs * (2 + 2 * kwords + rec)
                a16, a8 = w16.reshape(pairs, -1), w8.reshape(pairs, -1)
                # int16 weights and biases are stored doubled where the SMMLAR epilogue reads the accumulator
                # (ek_dsp_rq2d: no LSL per output)
                f = 2 if s16.ctx["acc_doubled"] else 1
                assert s16.ctx["acc_doubled"] == bool(s16.ctx.get("smmlar"))
                assert np.array_equal(a16[:, :2], f * a8[:, :2]) and np.array_equal(a16[:, 2 + 2 * kwords:],
                                                                                     a8[:, 2 + kwords:])
                words = a8[:, 2:2 + kwords]
                widened = np.stack([sxtb16(words, 0, f), sxtb16(words, 1, f)], axis=2).reshape(pairs, -1)
                assert np.array_equal(widened, a16[:, 2:2 + 2 * kwords])
                assert v8.flash_bytes(s8, node, graph) == s8.weight_bytes - w.nbytes - graph.constants[
                    node.inputs[2]].nbytes
            else:
                # per block and k-quad: 4 words (int8: one per row) against 8 (int16: (a|b) x row)
                blocks, quads = s8.ctx["rows_pad"] // 4, s8.ctx["quads"]
                a8 = w8.reshape(blocks, quads, 4)
                widened = np.stack([sxtb16(a8, 0), sxtb16(a8, 1)], axis=2).reshape(-1)
                assert np.array_equal(widened, w16)
                assert s8.ctx["tail_w"] == s16.ctx["tail_w"]
                # deterministic byte counts: 4 rows per block, one byte per weight, padding rows zero
                n_out, n_in = w.shape
                assert s8.weight_bytes == s8.ctx["rows_pad"] * n_in and s16.weight_bytes == 2 * s8.weight_bytes
                assert v8.flash_bytes(s8, node, graph) == (s8.ctx["rows_pad"] - n_out) * n_in
            seen += 1
    assert seen


def _sxtb16(word: int, ror: bool) -> tuple[int, int]:
    """The int16 halves SXTB16 (ROR #8) makes of an int32 word: bytes (0, 2), or (1, 3)."""
    b = [((word >> (8 * k)) & 0xFF) - (256 if (word >> (8 * k)) & 0x80 else 0) for k in range(4)]
    return (b[1], b[3]) if ror else (b[0], b[2])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("pairs", [True, False])
def test_dw3_int8_row_macs_compute_each_output_from_the_bias(n, stride, pairs):
    """The MACs dw3_int8 emits for a block of n outputs, interpreted over random ring rows and int8
    weights, equal the direct 3-tap dot products plus the bias: every accumulator starts from the
    bias in a0 before a0 changes (the first row's order), and the weight words' SXTB16 halves are
    the pairs the MACs need; ring words loaded two at a time (LDRD) or one at a time."""
    import numpy as np

    from edgekit.backends.cortexm.kernels.common import byte_words
    from edgekit.backends.cortexm.kernels.dw3_int8 import row_macs, row_word

    rng = np.random.default_rng(10 * n + stride)
    kh, cols = 3, 2 * ((n - 1) * stride + 4)
    x = rng.integers(-255, 256, (kh, cols))
    w = rng.integers(-128, 128, (kh, 3))
    bias = int(rng.integers(-5000, 5000))
    acc: dict[str, int | None] = {f"a{k}": None for k in range(n)}
    acc["a0"] = bias
    for ky in range(kh):
        word = int(byte_words(*row_word(*(int(v) for v in w[ky]), stride)))
        regs = {"P": _sxtb16(word, False), "Q": _sxtb16(word, True)}
        for line in row_macs(n, stride, 0, ky == 0, pairs, "X" if n > 5 else "t1"):  # six outputs: X is the 2nd word
            op, args = line.split(" ", 1)
            names = [a.strip(" %[]") for a in args.replace("[%[tp], #", "").replace("]", "").split(",")]
            if op in ("ldr", "ldrd"):  # one ring word, or two (LDRD)
                for j, reg in enumerate(names[:-1]):
                    e = int(names[-1]) // 2 + 2 * j
                    regs[reg] = (int(x[ky, e]), int(x[ky, e + 1]))
                continue
            dst, xr, wr, addend = names
            assert acc[addend] is not None, f"{addend} read before it holds the bias: {line}"
            (x0, x1), (w0, w1) = regs[xr], regs[wr]
            prod = {"smlad": x0 * w0 + x1 * w1, "smlabt": x0 * w1, "smlatb": x1 * w0, "smlabb": x0 * w0}[op]
            acc[dst] = acc[addend] + prod
    for k in range(n):
        want = bias + sum(int(x[ky, k * stride + j]) * int(w[ky, j]) for ky in range(kh) for j in range(3))
        assert acc[f"a{k}"] == want, (k, acc[f"a{k}"], want)


def test_balanced_can_widen_dwk_int8_and_dw3_int8(graphs, monkeypatch):
    """dwk_int8 saves instructions with int16 words (one LDRD instead of LDR + 2 SXTB16 per executed tap
    and quad), so a whole balanced allowance widens it to dwk; dw3_int8's assembly loop with the SMMLAR
    epilogue saves 2 x 3 instructions per channel step with dw3_wide's int16 records (one LDM per kernel
    row), so it is widened to dw3_wide; without that loop (instructions_saved_by_int16 = 0: dw3's int16
    records are about as fast) it keeps its int8 records."""
    from types import SimpleNamespace

    from edgekit.backends.cortexm.codegen import _select_kernels

    board = SimpleNamespace(flash=SimpleNamespace(length=1 << 22), stack_bytes=8192)
    reg = kernel_registry.registry()
    monkeypatch.setattr(kernel_registry, "BALANCED_EXTRA_FLASH", 10.0)
    # the widening of int8 records in flash: without dw3_int8_ram, which widens them in the arena instead
    monkeypatch.setattr(type(reg.get("dw3_int8_ram")), "refusal", lambda self, node, graph, plan: "off")
    seen = set()
    for graph, plan in graphs:
        size = _select_kernels(graph, plan, "optimized", ("dsp",), board, "size")
        balanced = _select_kernels(graph, plan, "optimized", ("dsp",), board, "balanced")
        for name, s in size.items():
            if s.kind == "dwk_int8":
                assert reg.get(s.kind).instructions_saved_by_int16(s) > 0
                assert balanced[name].kind == "dwk" and "balanced:" in balanced[name].describe()
            if s.kind == "dw3_int8":
                saved = reg.get(s.kind).instructions_saved_by_int16(s)
                assert saved >= 0 and (saved > 0) == ("asm" in s.ctx and "smmlar" in " ".join(
                    next(iter(s.ctx["asm"].values()))))
                assert balanced[name].kind == ("dw3_wide" if saved else "dw3_int8")
                seen.add(f"dw3_int8 saves {bool(saved)}")
            seen.add(s.kind)
    assert {"dwk_int8", "dw3_int8", "dw3_int8 saves True"} <= seen


def test_dw3_wide_records_hold_the_doubled_sxtb16_pairs():
    """dw3_wide's record of a channel holds per kernel row the int16 pairs dw3_int8 widens from its int8 word
    (SXTB16, SXTB16 ROR #8), doubled, and the doubled bias after row 0's; its channel loop loads them with
    one LDM per row and never widens or doubles in registers."""
    import numpy as np

    from edgekit.backends.cortexm.kernels.common import byte_words
    from edgekit.backends.cortexm.kernels.dw3_int8 import block_asm, row_word

    rng = np.random.default_rng(7)
    for stride in (1, 2):
        w = [int(v) for v in rng.integers(-128, 128, 3)]
        word = int(byte_words(*row_word(*w, stride)))
        pairs = {"P": _sxtb16(word, False), "Q": _sxtb16(word, True)}
        want = {"P": (2 * w[0], 2 * w[1]), "Q": (2 * w[1], 2 * w[2]) if stride == 1 else (2 * w[2], 0)}
        assert {k: (2 * a, 2 * b) for k, (a, b) in pairs.items()} == want
        lines = block_asm(4, stride, 3, 0, 12, 36, 8, 1, "ssat", 8, None, None, form="smmlar", wide=True)
        assert lines[1] == "ldmia %[r]!, {%[P], %[Q], %[a0]}"
        assert sum(line == "ldmia %[r]!, {%[P], %[Q]}" for line in lines) == 2
        assert not any(line.startswith(("sxtb16", "lsl", "ldr %[Q]")) for line in lines)
        int8 = block_asm(4, stride, 3, 0, 12, 36, 8, 1, "ssat", 8, None, None, form="smmlar")
        assert len(int8) - len(lines) == 2 * 3  # LDR + 2 SXTB16 per row against one LDM
