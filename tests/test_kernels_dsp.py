"""Optimized DSP-extension kernels (templates/cortexm/ops_dsp) equal the reference bit for bit.

Random TFLite chains (convolutions k x k with stride, SAME/VALID padding and dilation, 1x1,
depthwise 3x3 with stride 1/2 and depth multipliers, fused residual adds, dense layers of odd
sizes; nonzero input zero points, per-channel and per-tensor double rounding, RELU/RELU6/none)
and Brevitas models (uint8 inputs after a ReLU, QONNX single rounding, per-channel power-of-two
and float weight scales) are built with optimized kernels and run on the emulated Cortex-M4
(mps2-an386), Cortex-M7 (mps2-an500), Cortex-M33 (mps2-an505) and Cortex-M55 (mps3-an547).
``verify`` compares the firmware (optimized kernels) and the host build (reference kernels:
EK_USE_DSP is 0 there) with the simulator element by element; the manifest must show that the
layers really got optimized kernels. The unit tests check the one-multiply requantization
against the contract's double rounding, including exact ties.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels.common import run_pairs, scalar_expr
from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.ir import contract
from helpers.brevitas_models import U, Seq, qconv2d
from helpers.calibration import calibrate
from helpers.codes import input_codes
from edgekit.frontends.tflite.writer import TfliteBuilder, tflite
from helpers.tflite_layers import conv_layer, fc_layer, flatten
from helpers.compile_levels import disassembly_at_every_level

BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}


# ---------------------------------------------------------------------------------------
# Unit: the requantization forms
# ---------------------------------------------------------------------------------------
def test_one_multiply_form_refuses_what_it_cannot_do():
    mk = lambda m, s, ls=0: contract.Requant((m,), (s,), 0, -128, 127, False, "double", ls)  # noqa: E731
    assert contract.fast_double_rounding(mk(2**30, 32)) is None          # e = 1
    assert contract.fast_double_rounding(mk(2**30, 31)) is None          # no right shift
    assert contract.fast_double_rounding(mk(0, 31)) is None              # flushed multiplier
    assert contract.fast_double_rounding(mk(2**30, 40, 20)) is None      # a left shift needs the input bound
    assert contract.fast_double_rounding(contract.Requant((1,), (3,), 0, -128, 127, True)) is None  # QONNX rounding
    # TFLite ADD's inputs: x * 2^20 fits int32 for 8-bit codes
    expr = scalar_expr(mk(1623821475, 33, 20), 255)
    assert expr is not None and "<< 20" in expr
    assert scalar_expr(mk(2**30, 31, 20), 255) == "__ssat((int32_t)((uint32_t)({x}) << 19), 8)"
    assert scalar_expr(mk(1623821475, 33, 20), 5000) is None  # 5000 * 2^20 overflows


def test_smmlar_form_equals_double_rounding():
    """dw3_int8's SMMLAR epilogue (doubled accumulator, constants M, 2 Ahi, e) gives TFLite's double rounding
    plus the zero point over the whole accumulator bound, on exact ties too; it refuses bounds that would
    overflow 2 acc or floor(num / 2^31)."""
    from edgekit.backends.cortexm.kernels.dw3_int8 import doubled_constants, doubled_rq

    rng = np.random.default_rng(16)
    for trial in range(200):
        m = int(rng.integers(2**30, 2**31)) if trial % 3 else 2**30 + (trial % 2) * 2**29  # ties
        s, zp = int(rng.integers(33, 50)), int(rng.integers(-128, 128))
        bound = int(rng.integers(1, 2**21))
        rq = contract.Requant((m,), (s,), zp, -2**31, 2**31 - 1, False, "double")
        (cm, k2, e), = doubled_constants(rq, [bound])
        accs = np.concatenate([rng.integers(-bound, bound + 1, 2000), [-bound, bound, -1, 0, 1]])
        ties = [(int(k) * 2**s - 2**30 - 2**(s - 1)) // m for k in rng.integers(-2**20, 2**20, 300)]
        accs = np.concatenate([accs, [t + d for t in ties for d in (-1, 0, 1) if abs(t + d) <= bound]])
        assert np.array_equal(doubled_rq(accs, cm, k2, e), contract.mul_dbl(accs, m, s) + zp), (m, s, zp)
    rq = contract.Requant((2**30 + 5,), (40,), 0, -128, 127, False, "double")
    assert doubled_constants(rq, [2**30]) is None            # 2 acc overflows int32
    assert doubled_constants(rq, [2**29]) is not None
    assert doubled_constants(contract.Requant((2**30,), (32,), 0, -128, 127, False, "double"), [9]) is None  # e = 1


def test_smmlar_form_without_the_sign_term_under_a_relu_floor():
    """Left out, the rounding term of negative accumulators changes codes only at or below the zero point,
    so wherever the clamp's floor is at or above it (fused ReLU / ReLU6) the clamped codes equal TFLite's;
    below it (no activation) they differ."""
    from edgekit.backends.cortexm.kernels.dw3_int8 import doubled_constants, doubled_rq, sign_term_needed

    rng = np.random.default_rng(61)
    differed = 0
    for trial in range(200):
        m = int(rng.integers(2**30, 2**31)) if trial % 3 else 2**30 + (trial % 2) * 2**29
        s, zp = int(rng.integers(33, 50)), int(rng.integers(-128, 100))
        bound = int(rng.integers(1, 2**21))
        lo = zp + int(rng.integers(0, 3))
        rq = contract.Requant((m,), (s,), zp, lo, 127, False, "double")
        assert not sign_term_needed(rq)
        assert sign_term_needed(contract.Requant((m,), (s,), zp, zp - 1, 127, False, "double"))
        (cm, k2, e), = doubled_constants(rq, [bound])
        accs = np.concatenate([rng.integers(-bound, bound + 1, 2000), [-bound, bound, -1, 0, 1]])
        ties = [(int(k) * 2**s - 2**30 - 2**(s - 1)) // m for k in rng.integers(-2**20, 2**20, 300)]
        accs = np.concatenate([accs, [t + d for t in ties for d in (-1, 0, 1) if abs(t + d) <= bound]])
        want = contract.mul_dbl(accs, m, s) + zp
        got = doubled_rq(accs, cm, k2, e, signed_round=False)
        assert np.all(got[accs >= 0] == want[accs >= 0]) and np.all(got[accs < 0] <= zp)
        assert np.array_equal(np.clip(got, lo, 127), np.clip(want, lo, 127)), (m, s, zp)
        differed += int(np.any(got != want))
    assert differed  # unclamped, the term matters (ties of negative accumulators)


def test_scaled_records_give_every_channel_one_shift():
    """dw3_wide's records scaled per channel by 2^j_c (scaled_constants): SMMLA with (M, K_c) on 2^j_c acc, then
    one arithmetic shift for all channels, equals TFLite's double rounding after a clamp floor at or above the
    zero point, over the accumulator bound and on ties; refused without such a floor, with one shift already,
    or where 2^j_c w leaves int16."""
    from edgekit.backends.cortexm.kernels.dw3_int8 import doubled_constants, scaled_constants

    rng = np.random.default_rng(62)
    for trial in range(60):
        n = 6
        ms = [int(rng.integers(2**30, 2**31)) for _ in range(n)]
        ss = [int(rng.integers(36, 41)) for _ in range(n)]
        ss[0], ss[1] = 36, 40                      # shifts that differ
        zp = int(rng.integers(-128, 100))
        lo = zp + int(rng.integers(0, 3))
        rq = contract.Requant(tuple(ms), tuple(ss), zp, lo, 127, False, "double")
        w = rng.integers(-128, 128, (3, 3, n))
        bias = rng.integers(-5000, 5000, n)
        bounds = np.abs(bias) + np.abs(w).sum(axis=(0, 1)) * 255
        dbl = doubled_constants(rq, bounds)
        ks, shift = scaled_constants(rq, dbl, bounds, w, bias)
        for c in range(n):
            j = 2 + (shift - 1) - dbl[c][2]
            accs = np.concatenate([rng.integers(-bounds[c], bounds[c] + 1, 3000), [-bounds[c], bounds[c], -1, 0, 1]])
            ties = [(int(k) * 2**ss[c] - 2**30 - 2**(ss[c] - 1)) // ms[c] for k in rng.integers(-2**12, 2**12, 200)]
            accs = np.concatenate([accs, [t + d for t in ties for d in (-1, 0, 1) if abs(t + d) <= bounds[c]]])
            a = accs.astype(object) * 2**j                            # exact integers: SMMLA's 64-bit sum
            got = np.array([((int(v) * ms[c] + ks[c] * 2**32) >> 32) >> shift for v in a])
            want = contract.mul_dbl(accs, ms[c], ss[c]) + zp
            assert np.array_equal(np.clip(got, lo, 127), np.clip(want, lo, 127)), (trial, c)
        assert scaled_constants(contract.Requant(tuple(ms), tuple(ss), zp, zp - 1, 127, False, "double"), dbl,
                                bounds, w, bias) is None                      # no floor: the sign term is needed
        one = contract.Requant(tuple(ms), (38,) * n, zp, lo, 127, False, "double")
        assert scaled_constants(one, doubled_constants(one, bounds), bounds, w, bias) is None
        far = contract.Requant(tuple(ms), (36, 48) + (40,) * (n - 2), zp, lo, 127, False, "double")
        assert scaled_constants(far, doubled_constants(far, bounds), bounds, w, bias) is None  # 2^14 w


def test_dw3_int8_ram_only_where_an_arena_gap_holds_its_records(chain_a0):
    """dw3_int8_ram keeps dw3_int8's flash (28 B per 3x3 channel) and widens its records into free arena bytes
    beside the ring; where no gap holds ring and records while the layer runs (or the loop would save less than
    the widening costs) it refuses, and dw3_int8 takes the layer: it never adds RAM."""
    from edgekit.backends.cortexm.kernels import dw3_int8 as mod
    from edgekit.backends.cortexm.kernels.registry import arena_gap
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    graph, _ = import_tflite(chain_a0)
    run_default_passes(graph)
    plan = plan_memory(graph, fuse=False)  # row-fused, the depthwise layer's gap holds only the ring
    i, node = next((i, n) for i, n in enumerate(graph.nodes) if n.attrs.get("depthwise"))
    ram, int8 = mod.Dw3Int8Ram(), mod.Dw3Int8()
    assert ram.refusal(node, graph, plan_memory(graph)) is not None
    assert ram.refusal(node, graph, plan) is None
    s, s8 = ram.select(node, graph, plan), int8.select(node, graph, plan)
    oc = graph.tensors[node.outputs[0]].shape[-1]
    assert s.weight_bytes == s8.weight_bytes == 28 * oc and s.ctx["scratch_bytes"] == s8.ctx["scratch_bytes"] + 40 * oc
    assert arena_gap(plan, i, s.ctx["scratch_bytes"]) is not None
    # the flash words widen to dw3_wide's records: per row the bytes (w0, w1, w2, 0) times 2^j, then bias, M, K, X
    words, fw, rw = s.ctx["unpack"]["words"], s.ctx["unpack"]["fw"], s.ctx["rw"]
    for c in range(oc):
        f, rec = words[c * fw:(c + 1) * fw], s.ctx["rec_words"][c * rw:(c + 1) * rw]
        sc = 1 << ((f[-1] >> 16) & 0xFF)
        for ky in range(3):
            b = [((f[ky] >> (8 * k)) & 0xFF) - (256 if (f[ky] >> (8 * k)) & 0x80 else 0) for k in range(3)]
            second = (b[1], b[2]) if node.attrs["stride"][1] == 1 else (b[2], 0)
            got = rec[0:2] if ky == 0 else rec[2 * ky + 1:2 * ky + 3]
            assert got == [int(mod.pair_words(sc * b[0], sc * b[1])), int(mod.pair_words(*(sc * v for v in second)))]
        assert [f[3], f[4], f[5], f[6] & 0xFFFF] == [rec[2], rec[-3], rec[-2], rec[-1] & 0xFFFF]
    # no gap: every arena byte live while the layer runs
    import dataclasses

    from edgekit.ir.planner import Placement
    full = dataclasses.replace(plan, placements={**plan.placements, "_all": Placement(
        "_all", 0, plan.arena_bytes, 0, len(graph.nodes), "arena")})
    assert "arena gap" in ram.refusal(node, graph, full)
    assert int8.refusal(node, graph, full) is None


def test_run_pairs_cover_every_byte_once():
    for n in range(1, 40):
        pairs = run_pairs(n)
        got = sorted(e for p in pairs for e in p if e >= 0)
        assert got == list(range(n)) and len(pairs) == (n + 1) // 2


# ---------------------------------------------------------------------------------------
# Random TFLite chains
# ---------------------------------------------------------------------------------------
class Chain:
    """Appends TFLite layers to a builder, tracking shape and quantization."""

    def __init__(self, rng, shape, scale=0.02, zp=7):
        self.rng, self.b = rng, TfliteBuilder()
        self.x = self.inp = self.b.act((1,) + tuple(shape), scale, zp)
        self.shape, self.scale, self.zp = tuple(shape), scale, zp
        self.rms = 45.0

    def _act(self):
        A = tflite.ActivationFunctionType
        return [A.NONE, A.RELU, A.RELU6][int(self.rng.integers(0, 3))]

    def conv(self, oc, k, stride=1, padding="SAME", dilation=1, depthwise=False, mult=1, per_channel=True, act=None):
        self.x, self.shape, self.scale, self.zp = conv_layer(
            self.b, self.rng, self.x, self.shape, self.scale, oc, k, stride, padding,
            self._act if act is None else act, depthwise, mult, per_channel, dilation, self.rms, zp_range=30)
        self.rms = 30.0
        return self

    def add_to(self, other):
        """ADD this tensor and `other` = (index, scale, zp) of the same shape (fused into the conv)."""
        idx, s2, _ = other
        s = float(np.hypot(self.scale, s2)) * 0.8
        zp = int(self.rng.integers(-20, 20))
        y = self.b.act((1,) + self.shape, s, zp)
        self.b.op("ADD", [self.x, idx], [y], "AddOptions", FusedActivationFunction=self._act())
        self.x, self.scale, self.zp = y, s, zp
        return self

    def dense(self, n_out, per_channel=True):
        if len(self.shape) > 1:
            self.x, n = flatten(self.b, self.x, self.shape, self.scale, self.zp)
            self.shape = (n,)
        self.x = fc_layer(self.b, self.rng, self.x, self.shape[0], self.scale, n_out, self.rms, 0.06,
                          per_channel=per_channel)
        self.shape, self.scale, self.zp, self.rms = (n_out,), 0.06, int(self.b.tensors[self.x]["zp"][0]), 30.0
        return self

    def build(self) -> bytes:
        return self.b.build([self.inp], [self.x])


def chain_a(seed: int) -> bytes:
    """conv k x k SAME -> depthwise 3x3 stride 1 (in place) -> 1x1 (in place) -> conv 3x3/2 VALID per-tensor ->
    dense odd -> dense per-tensor."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 13)), int(rng.integers(7, 12))
    c = int(rng.choice([1, 2, 3, 4, 5, 8]))
    ch = Chain(rng, (h, w, c), zp=int(rng.integers(-60, 60)))
    k = int(rng.choice([2, 3, 5]))
    c1 = int(rng.choice([4, 6, 7, 8, 12]))
    ch.conv(c1, k).conv(0, 3, depthwise=True).conv(int(rng.integers(3, c1 + 1)), 1)
    ch.conv(int(rng.choice([5, 8, 9])), 3, stride=2, padding="VALID", per_channel=False)
    return ch.dense(int(rng.choice([7, 11, 13]))).dense(int(rng.choice([3, 5, 6])), per_channel=False).build()


def chain_b(seed: int) -> bytes:
    """conv with dilation 2 -> depthwise 3x3/2 with depth multiplier -> two convs 3x3, a fused residual add ->
    depthwise 3x3 VALID with depth multiplier 3 -> 1x1 stride 2 -> dense."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(11, 16)), int(rng.integers(10, 15))
    c = int(rng.choice([2, 3, 4, 8]))
    ch = Chain(rng, (h, w, c), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([4, 5, 8])), int(rng.choice([2, 3])), dilation=2)
    ch.conv(0, 3, stride=2, depthwise=True, mult=int(rng.choice([1, 2])))
    trunk = (ch.x, ch.scale, ch.zp)
    # a ResNet block: conv -> conv + trunk (the add fuses into the second conv, in place over the trunk)
    ch.conv(ch.shape[2], 3, act=tflite.ActivationFunctionType.RELU).conv(ch.shape[2], 3).add_to(trunk)
    ch.conv(0, 3, padding="VALID", depthwise=True, mult=3)
    ch.conv(int(rng.choice([3, 6, 7])), 1, stride=2)
    return ch.dense(int(rng.choice([5, 9, 10]))).build()


def chain_c(seed: int) -> bytes:
    """Wide rows: depthwise 3x3 stride 1 and stride 2 over rows of 43 to 61 pixels, so a channel's three
    int16 ring rows span more than the 255 bytes a post-indexed Thumb-2 load can step (the MobileNet
    VWW layout at 96x96) -> 1x1 -> dense."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(4, 7)), int(rng.integers(43, 62))
    ch = Chain(rng, (h, w, int(rng.choice([2, 3]))), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([4, 6])), 3)
    ch.conv(0, 3, depthwise=True).conv(0, 3, stride=2, depthwise=True)
    return ch.conv(int(rng.choice([3, 5])), 1).dense(int(rng.choice([5, 7]))).build()


def chain_d(seed: int) -> bytes:
    """Depthwise kernels other than kh x 3 (ops_dsp/dwk.c.j2): 5x5 SAME stride 1 (in place), 1 x 9 SAME
    (a 1D kernel), 3x3 with dilation 2, 5x5 stride 2 VALID; channel counts that are not multiples of 4."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(7, 11)), int(rng.integers(9, 14))
    ch = Chain(rng, (h, w, int(rng.choice([2, 3]))), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([6, 7, 10])), 3)
    ch.conv(0, 5, depthwise=True).conv(0, (1, 9), depthwise=True).conv(0, 3, dilation=2, depthwise=True)
    ch.conv(0, 5, stride=2, padding="VALID", depthwise=True)
    return ch.conv(int(rng.choice([3, 5])), 1).dense(int(rng.choice([5, 7]))).build()


def chain_e(seed: int) -> bytes:
    """Edge cases of the Helium depthwise kernel (ops_mve/dw.c.j2): maps narrower and shorter than its four
    lanes, kernels 3x3 (in place), 3x1 VALID, 2x2 stride 2, 1x1, 3x3 stride 3; channel counts that are not
    multiples of 4; a per-tensor multiplier, and per-channel multipliers above 1 (a left shift) and in [1/2, 1)
    (no right shift) beside the usual ones."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 13)), int(rng.integers(5, 13))
    ch = Chain(rng, (h, w, int(rng.choice([1, 3, 5]))), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([5, 7, 9, 19])), 1)
    ch.conv(0, 3, depthwise=True, per_channel=False)
    ch.rms = 0.6                 # multipliers about 0.3 to 1.4 (some above 1: a left shift)
    ch.conv(0, (3, 1), padding="VALID", depthwise=True)
    ch.rms = 0.3                 # multipliers about 0.5 to 1.2
    ch.conv(0, 2, stride=2, depthwise=True)
    ch.conv(0, 1, depthwise=True)
    ch.conv(0, 3, stride=3, depthwise=True)
    return ch.conv(int(rng.choice([3, 5])), 1).dense(int(rng.choice([5, 7]))).build()


CHAINS = {"a": chain_a, "b": chain_b, "c": chain_c, "d": chain_d, "e": chain_e}


def _check(out: Path, rep, expect_optimized: set[str], weights: str | None = None) -> None:
    """Bit-exact stages, and every layer of ``expect_optimized`` optimized (with ``weights``, "int8"
    or "int16": the GEMM and dense layers' weight storage, as the manifest describes it)."""
    manifest = json.loads((out / "manifest.json").read_text())
    kernels = {r["name"]: r.get("kernel", "") for r in manifest["layers"]}
    for name in expect_optimized:
        assert kernels[name].startswith("optimized"), (name, kernels[name])
        if weights and kernels[name].startswith(("optimized conv2d_gemm", "optimized dense")):
            assert f"{weights} weights" in kernels[name], (name, kernels[name])
    assert manifest["kernels"] == "optimized"
    for s in rep.stages:
        if s.stage.startswith(("host", "firmware")):
            assert s.elements > 0 and s.mismatches == 0, rep.table()
    assert rep.ok, rep.table()


#: (chain, seed, --optimize): every chain with int8 weights (size), half of them with the int16-weight
#: variants (speed) and with the default (balanced: int16 weights for the layers that gain most) too
CHAIN_CASES = [(c, s, "size") for c, s in (("a", 0), ("a", 1), ("b", 2), ("b", 3), ("c", 4), ("c", 5), ("d", 6),
                                               ("d", 7))] + [(c, s, "speed") for c, s in (("a", 1), ("b", 2),
                                                                                        ("c", 5), ("d", 6))] + [
    (c, s, "balanced") for c, s in (("a", 0), ("b", 3), ("c", 4), ("d", 7))]


@pytest.mark.parametrize("target", sorted(BOARDS))
@pytest.mark.parametrize("chain,seed,optimize", CHAIN_CASES)
def test_random_tflite_chains_bit_exact(chain, seed, optimize, target, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"{chain}{seed}.tflite"
    model.write_bytes(CHAINS[chain](seed))
    out = tmp_path / "b"
    build(model, target, BOARDS[target], out, optimize=None if optimize == "balanced" else optimize)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    codes = input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10)
    rep = verify(out, codes=codes, stages=("host", "qemu"))
    opt = {n.name for n in graph.nodes if n.op in ("conv2d", "dense")}
    _check(out, rep, opt, weights={"speed": "int16", "size": "int8"}.get(optimize))
    src = (out / "src" / "model.c").read_text()
    assert "#if EK_USE_DSP" in src and "ldmia %[xp]!" in src  # the conv micro-kernel
    # int8 weight words widened in registers, or int16 pairs fetched by LDRD
    if optimize != "balanced":
        assert ("sxtb16 %[wa], %[wb]" in src) == (optimize == "size")
    if any(n.attrs.get("depthwise") and n.attrs["depth_multiplier"] == 1 and n.attrs["kernel"][1] == 3
           and n.attrs["dilation"] == [1, 1] for n in graph.nodes):
        assert "ldmia %[r]!" in src  # the kh x 3 depthwise channel loop in assembly
    # depthwise kh x 3: int16 records under speed (dw3_wide's per channel where the assembly loop with the SMMLAR
    # epilogue applies, else dw3's per ring rotation), int8 weights widened by SXTB16 otherwise (dw3_int8; under
    # balanced dw3_wide within the flash allowance)
    kernels = {r["name"]: r.get("kernel", "") for r in json.loads((out / "manifest.json").read_text())["layers"]}
    for n in graph.nodes:
        if n.attrs.get("depthwise") and n.attrs["kernel"][1] == 3 and n.attrs["dilation"] == [1, 1]:
            want = {"speed": ("optimized dw3_wide", "optimized dw3:"), "size": ("optimized dw3_int8",),
                    "balanced": ("optimized dw3_int8", "optimized dw3_wide")}[optimize]
            assert kernels[n.name].startswith(want), (n.name, kernels[n.name])
            wide_ok = n.attrs["depth_multiplier"] == 1 and not n.attrs.get("residual")
            if optimize == "speed" and not wide_ok:
                assert kernels[n.name].startswith("optimized dw3:"), (n.name, kernels[n.name])
    if chain == "c":
        assert "addw %[tp]" in src  # rings too wide for post-indexed loads step with ADDW
    if chain == "d":
        kernels = [r.get("kernel", "") for r in json.loads((out / "manifest.json").read_text())["layers"]]
        assert sum(k.startswith("optimized dwk") for k in kernels) == 4, kernels
        assert any("in place" in k for k in kernels), kernels  # the 5x5 SAME layer overwrites its input


def chain_six(seed: int) -> bytes:
    """Depthwise 3x3 under a fused ReLU / ReLU6 (dw3_wide's scaled records, the SMMLA epilogue: steps of up to six
    outputs) over rows of 6 to 14 pixels, stride 1 then stride 2, odd and even channel counts."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(6, 10)), int(rng.integers(6, 15))
    A = tflite.ActivationFunctionType
    ch = Chain(rng, (h, w, int(rng.choice([2, 3]))), zp=int(rng.integers(-60, 60)))
    ch.conv(int(rng.choice([5, 8, 12])), 3, act=A.RELU)
    ch.conv(0, 3, depthwise=True, act=A.RELU6).conv(0, 3, stride=2, depthwise=True, act=A.RELU)
    return ch.conv(int(rng.choice([3, 5])), 1).dense(int(rng.choice([5, 7]))).build()


@pytest.mark.parametrize("seed", [21, 23, 28])  # rows of 13, 12, 13 pixels (stride 2: 7, 6, 7)
def test_six_output_depthwise_steps_bit_exact(seed, tmp_path):
    """dw3_wide's steps of six outputs (X holds the second ring word, each accumulator is requantized in place):
    equal to the reference on the M4, and chosen where they save instructions (kernels/dw3_int8.py: blocks)."""
    from edgekit.api import build, verify
    from edgekit.backends.cortexm.kernels import dw3_int8 as mod
    from edgekit.ir.graph import Graph

    assert mod.step_instructions(6, 1, True, True) < 6 / 4 * mod.step_instructions(4, 1, True, True)
    assert [n for _, _, n in mod.blocks(12, 1, True, True)] == [6]
    assert max(n for _, _, n in mod.blocks(12, 1, True, False)) <= mod.MAX_BLOCK
    model = tmp_path / "six.tflite"
    model.write_bytes(chain_six(seed))
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize="speed")
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    rep = verify(out, codes=input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10),
                 stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")})
    kernels = {r["name"]: r.get("kernel", "") for r in json.loads((out / "manifest.json").read_text())["layers"]}
    dws = [n.name for n in graph.nodes if n.attrs.get("depthwise")]
    assert all(kernels[n].startswith("optimized dw3_wide") for n in dws), kernels
    assert any(" 6 outputs" in kernels[n] or "/6" in kernels[n] or "6/" in kernels[n] for n in dws), kernels
    if seed == 23:  # the six-output assembly also leaves r7 to a frame pointer, at every optimization level
        for flags, dis in disassembly_at_every_level(out, tmp_path).items():
            assert ("smmla" in dis) == (flags != ("-O0",)), flags


# ---------------------------------------------------------------------------------------
# Brevitas models: uint8 inputs, QONNX single rounding, per-channel weight scales
# ---------------------------------------------------------------------------------------
def _brevitas(name: str):
    import brevitas.nn as qnn
    from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFixedPointMSE, Int8WeightPerChannelFloat,
                                Int32Bias)
    from torch import nn

    relu = lambda: qnn.QuantReLU(act_quant=U, return_quant_tensor=True)  # noqa: E731
    if name == "uint8_conv_dw_pw":
        return Seq(qconv2d(3, 8, 3, padding=1), relu(),
                   qconv2d(8, 8, 3, padding=1, groups=8, weight_quant=Int8WeightPerChannelFixedPointMSE), relu(),
                   qconv2d(8, 6, 1), relu(), qconv2d(6, 5, 3, stride=2, padding=1, dilation=1)), (3, 9, 8)
    if name == "uint8_dense_float_scales":
        return Seq(qconv2d(2, 4, 3, weight_quant=Int8WeightPerChannelFloat), relu(), nn.Flatten(),
                   qnn.QuantLinear(4 * 5 * 4, 13, weight_quant=Int8WeightPerChannelFloat, bias_quant=Int32Bias,
                                   return_quant_tensor=True),
                   out_quant=Int8ActPerTensorFloat), (2, 7, 6)
    raise KeyError(name)


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m55"])
@pytest.mark.parametrize("name", ["uint8_conv_dw_pw", "uint8_dense_float_scales"])
def test_brevitas_uint8_models_bit_exact(name, target, tmp_path):
    import torch

    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph
    from edgekit.qat import export_qonnx

    torch.manual_seed(3)
    model, shape = _brevitas(name)
    model = calibrate(model, shape)
    onnx_path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / f"{name}.onnx")
    out = tmp_path / "b"
    build(onnx_path, target, {"cortex-m4": "mps2-an386", "cortex-m55": "mps3-an547"}[target], out)
    graph = Graph.load(out)
    uint8_in = {n.name for n in graph.nodes if n.op in ("conv2d", "dense") and graph.tensors[n.inputs[0]].dtype == "uint8"}
    assert uint8_in, "no layer with a uint8 input"
    rep = verify(out, count=64, seed=5, stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")})


# ---------------------------------------------------------------------------------------
# Selection, the reference switch, other cores, exact instruction counts
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_a0(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dsp")
    (d / "a0.tflite").write_bytes(chain_a(0))
    return d / "a0.tflite"


def test_reference_kernels_switch_and_core_without_dsp(chain_a0, tmp_path, capsys):
    from edgekit.api import build
    from edgekit.cli import main

    assert main(["build", str(chain_a0), "--target", "cortex-m4", "--board", "mps2-an386", "-o", str(tmp_path / "r"),
                 "--kernels", "reference"]) == 0
    assert "0 layer(s) with optimized kernels" in capsys.readouterr().out
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["kernels"] == "reference"
    assert all(r["kernel"] == "reference (--kernels reference)" for r in m["layers"] if r["op"] in ("conv2d", "dense"))
    src = (tmp_path / "r" / "src" / "model.c").read_text()
    assert "EK_USE_DSP" not in src and "kernel: reference (--kernels reference)" in src
    res = build(chain_a0, "cortex-m3", "mps2-an385", tmp_path / "m3")
    assert all(r["kernel"] == "reference (core without the DSP extension)" for r in res.manifest.layers
               if r["op"] in ("conv2d", "dense"))
    with pytest.raises(Exception, match="kernels 'fast'"):
        build(chain_a0, "cortex-m4", "mps2-an386", tmp_path / "x", kernels="fast")
    # --optimize: passed through to the kernel selection, recorded per layer; a bad value is one error line
    assert main(["build", str(chain_a0), "--target", "cortex-m4", "--board", "mps2-an386", "-o", str(tmp_path / "s"),
                 "--optimize", "speed"]) == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    gemm = [r["kernel"] for r in m["layers"] if r["op"] in ("conv2d", "dense") and "dw3" not in r["kernel"]]
    assert gemm and all("int16 weights" in k for k in gemm), gemm
    with pytest.raises(SystemExit) as e:
        main(["build", str(chain_a0), "--target", "cortex-m4", "-o", str(tmp_path / "y"), "--optimize", "fast"])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(Exception, match="optimize 'fast': choose one of size, balanced, speed"):
        build(chain_a0, "cortex-m4", "mps2-an386", tmp_path / "x", optimize="fast")
    with pytest.raises(Exception, match="--optimize applies to Cortex-M targets only"):
        build(chain_a0, "fpga", "zcu104", tmp_path / "x", optimize="size")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_flash_budget_and_arena_scratch(chain_a0, monkeypatch):
    from types import SimpleNamespace

    from edgekit.backends.cortexm.codegen import _select_kernels
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    graph, _ = import_tflite(chain_a0)
    run_default_passes(graph)
    plan = plan_memory(graph)
    kernel_nodes = [n.name for n in graph.nodes if n.op in ("conv2d", "dense")]
    big = SimpleNamespace(flash=SimpleNamespace(length=1 << 22), stack_bytes=8192)
    sel = _select_kernels(graph, plan, "optimized", ("dsp",), big)
    assert all(sel[n].optimized for n in kernel_nodes)
    # scratch buffers go where no live tensor is while the layer runs (else on the stack)
    for i, n in enumerate(graph.nodes):
        s = sel[n.name]
        if s.optimized and s.scratch is not None:
            lo, hi = s.scratch, s.scratch + s.ctx["scratch_bytes"]
            assert hi <= plan.arena_bytes
            for p in plan.placements.values():
                if p.buffer == "arena" and p.first <= i <= p.last:
                    assert hi <= p.offset or p.offset + p.size <= lo
    # --optimize speed: int16 weights may take at most half the board's flash; layers go to their int8-weight
    # variant (GEMM, dense and depthwise kh x 3) until they fit, else back to the reference kernel (largest first)
    reg = kernel_registry.registry()
    nodes = {n.name: n for n in graph.nodes}

    def flash(sel):
        return {n: reg.get(sel[n].kind).flash_bytes(sel[n], nodes[n], graph) for n in kernel_nodes if sel[n].optimized}

    wide = _select_kernels(graph, plan, "optimized", ("dsp",), big, "speed")
    assert not any(wide[n].kind.endswith("_int8") for n in kernel_nodes)
    sizes = flash(wide)
    total = sum(sizes.values())
    monkeypatch.setattr(kernel_registry, "FLASH_MARGIN", 0)
    small = SimpleNamespace(flash=SimpleNamespace(length=total), stack_bytes=8192)
    sel = _select_kernels(graph, plan, "optimized", ("dsp",), small, "speed")
    kept = [n for n in kernel_nodes if sel[n].kind == wide[n].kind]
    narrowed = [n for n in kernel_nodes if sel[n].kind.endswith(("_int8", "_int8_ram"))]
    dropped = [n for n in kernel_nodes if not sel[n].optimized]
    assert kept and narrowed and sum(flash(sel).values()) <= total // 2
    # narrowed first: the layers that lose the fewest instructions per flash byte freed (dw3's int16
    # records lose none against dw3_int8), not the largest ones
    int8 = _select_kernels(graph, plan, "optimized", ("dsp",), big, "size")

    def loss_per_byte(n):
        freed = sizes[n] - reg.get(int8[n].kind).flash_bytes(int8[n], nodes[n], graph)
        return reg.get(int8[n].kind).instructions_saved_by_int16(int8[n]) / freed

    narrowable = [n for n in kept if int8[n].kind != wide[n].kind]
    assert narrowable and max(loss_per_byte(n) for n in narrowed) <= min(loss_per_byte(n) for n in narrowable)
    assert all("flash" in sel[n].reason for n in dropped)
    assert all("int8 weights" in sel[n].describe() and "flash" in sel[n].describe() for n in narrowed)
    # no silent degradation: every narrowed or dropped layer is listed with the reason (build line, report, manifest)
    from edgekit.backends.cortexm.codegen import kernel_fallbacks
    listed = {f["layer"]: f for f in kernel_fallbacks(graph, sel)}
    assert set(listed) == set(narrowed + dropped) and all("flash" in f["reason"] for f in listed.values())
    assert not kernel_fallbacks(graph, wide)
    # size keeps the weights at int8: every layer fits that board with an optimized kernel
    assert all(s.optimized for n, s in _select_kernels(graph, plan, "optimized", ("dsp",), small, "size").items()
               if n in kernel_nodes)
    # a board loaded into RAM: the budget is the RAM's
    ram_board = SimpleNamespace(flash=SimpleNamespace(length=1 << 22), ram=SimpleNamespace(length=total), load="ram",
                                stack_bytes=8192)
    in_ram = _select_kernels(graph, plan, "optimized", ("dsp",), ram_board, "speed")
    assert {n: in_ram[n].kind for n in kernel_nodes} == {n: sel[n].kind for n in kernel_nodes}
    assert not any(s.optimized for s in _select_kernels(graph, plan, "optimized", (), big).values())


@pytest.mark.parametrize("chain,optimize", [("a0", "balanced"), ("a0", "speed"), ("c4", "balanced")])
def test_optimized_model_c_compiles_with_any_optimization_and_a_frame_pointer(chain, optimize, chain_a0, tmp_path):
    """The inline assembly needs 13 registers: it must leave r7 to a frame pointer; -O0 gets the
    reference kernels (EK_USE_DSP needs __OPTIMIZE__). c4: the wide depthwise rings (ADDW steps).
    a0 with int8 (balanced) and int16 (speed) weights."""

    from edgekit.api import build

    model = chain_a0
    if chain == "c4":
        model = tmp_path / "c4.tflite"
        model.write_bytes(chain_c(4))
    out = tmp_path / "b"
    build(model, "cortex-m4", "mps2-an386", out, optimize=optimize)
    for flags, dis in disassembly_at_every_level(out, tmp_path).items():
        assert ("smlad" in dis) == (flags != ("-O0",)), flags


@pytest.mark.parametrize("target,board", [("cortex-m33", "mps2-an505"), ("cortex-m55", "mps3-an547")])
def test_other_dsp_cores(chain_a0, target, board, tmp_path):
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    out = tmp_path / "b"
    build(chain_a0, target, board, out)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    codes = input_codes(np.random.default_rng(0), t.shape, 16, t.zero_point, 10)
    rep = verify(out, codes=codes, stages=("qemu",))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")})


#: Executed instructions of one inference of chain_a(0) with optimized kernels on mps2-an386 (GCC 12.2.1,
#: QEMU 7.2; the input is irrelevant: no kernel branches on data), with int16 weights (--optimize speed) and
#: int8 weights (balanced, the default). Update with `edgekit profile` when the kernels or the compiler change.
#: History (speed / size / balanced): 46650 / 52918 / 49103 at the start of round 6; then the depthwise ring
#: fills two column pairs per step (w16-dw), the first conv and the depthwise run row-fused band by band (p16-ram:
#: arena 960 -> 720 B, which keeps the first conv on conv2d_gemm: conv2d_fewch has no pixel ranges, and leaves
#: dw3_int8_ram no arena gap), the GEMM requantizes in its own assembly (g16-gemm), and the dense layers run
#: dense_asm / dense_asm_int8 (a16-dense); balanced spends what the default flash goal (1.05 x the int8
#: parameters + 24 KiB, measured on the firmware) leaves on int16 weights: this small model takes them
#: everywhere, as speed does (v16-flash). Re-measured on the merged tree. Round 7: the row-fused first conv runs
#: conv2d_fewch over pixel ranges (f17-first): 46242 / 51742 / 46242 -> 44522 / 50329 / 44522; conv2d_fewch_int8 widens
#: its weight stream to int16 pairs in RAM once per call, doubled for the SMMLAR epilogue: size 50329 -> 48319.
#: x17-dw: the ring's odd first and last
#: data columns are written without a zero-point word (dw_ring.j2): 46242 / 51742 / 46242 -> 46149 / 51696 / 46149;
#: both merged: 44429 / 48273 / 44429. y17-gemm's im2col of 3 pixels at once (ek_im2col3) does
#: not apply once the first conv runs conv2d_fewch: the same counts with it merged.
EXPECTED_INSTRUCTIONS = 44429
EXPECTED_INSTRUCTIONS_INT8 = {"size": 48273, "balanced": 44429}
#: Flash bytes of chain_a(0)'s weights (manifest memory_breakdown: model constants) on mps2-an386 with int16
#: and with int8 weights in the GEMM, dense and depthwise layers (dw3_int8: one 28-byte record per channel;
#: dw3_wide under speed: one 40-byte record of int16 pairs per channel instead of dw3's three 40-byte ones;
#: dense_asm: rows in blocks of 4, the requantization constants in the stream under speed, the biases inside
#: the int8 pairs' stream; the row-fusion schedule: 6 B); balanced: within the default flash goal, the speed layout
EXPECTED_WEIGHT_FLASH = {"speed": 6694, "size": 3590, "balanced": 6694}


def test_exact_instruction_count(chain_a0, tmp_path):
    from edgekit.api import build
    from edgekit.backends.cortexm.profile import profile

    ref = build(chain_a0, "cortex-m4", "mps2-an386", tmp_path / "r", kernels="reference")
    n_ref = profile(ref.out_dir, count=2, write=False).to_json()
    weights = {}
    for optimize, expected in (("speed", EXPECTED_INSTRUCTIONS), *EXPECTED_INSTRUCTIONS_INT8.items()):
        opt = build(chain_a0, "cortex-m4", "mps2-an386", tmp_path / optimize, optimize=optimize)
        n_opt = profile(opt.out_dir, count=2, write=False).to_json()
        totals = [v for v in (n_opt["vectors"]["min"], n_opt["vectors"]["max"])]
        assert totals[0] == totals[1], "optimized kernels should not branch on data"
        assert n_opt["total"]["instructions"] == expected, (optimize, n_opt["total"]["instructions"])
        assert n_opt["total"]["instructions"] * 2 < n_ref["total"]["instructions"]
        weights[optimize] = opt.manifest.memory_breakdown["flash"]["weights"]
    assert weights == EXPECTED_WEIGHT_FLASH, weights
    # the int8 layout stores the GEMM and dense weights in one byte each instead of two
    assert weights["size"] < weights["speed"] * 0.6


# ---------------------------------------------------------------------------------------
# Helium (MVE) kernels on the Cortex-M55 (mps3-an547)
# ---------------------------------------------------------------------------------------
#: Executed instructions of one inference of chain_a(0) on mps3-an547 with the Helium kernels, depthwise
#: included (GCC 12.2.1, QEMU 7.2); update with `edgekit profile` when the kernels or the compiler change.
EXPECTED_INSTRUCTIONS_M55 = 24291


@pytest.mark.parametrize("chain,seed", [("a", 0), ("a", 1), ("b", 2), ("b", 3), ("c", 4), ("c", 5), ("d", 6),
                                        ("e", 8), ("e", 9), ("e", 10), ("e", 11)])
def test_mve_kernels_bit_exact(chain, seed, tmp_path):
    """Convolutions (padding, stride, dilation, fused residual adds), depthwise layers with a depth multiplier
    of 1 (any kernel, stride, padding, dilation, in place) and dense layers on Helium equal the reference;
    depthwise layers with a depth multiplier keep the DSP kernel."""
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    model = tmp_path / f"{chain}{seed}.tflite"
    model.write_bytes(CHAINS[chain](seed))
    out = tmp_path / "b"
    build(model, "cortex-m55", "mps3-an547", out)
    graph = Graph.load(out)
    t = graph.tensors[graph.inputs[0]]
    codes = input_codes(np.random.default_rng(seed), t.shape, 40, t.zero_point, 10)
    rep = verify(out, codes=codes, stages=("host", "qemu"))
    _check(out, rep, {n.name for n in graph.nodes if n.op in ("conv2d", "dense")})
    kernels = {r["name"]: r.get("kernel", "") for r in json.loads((out / "manifest.json").read_text())["layers"]}
    for n in graph.nodes:
        if n.op == "dense" or (n.op == "conv2d" and (not n.attrs["depthwise"] or n.attrs["depth_multiplier"] == 1)):
            assert kernels[n.name].startswith("optimized mve_"), (n.name, kernels[n.name])
    src = (out / "src" / "model.c").read_text()
    assert "vmladavaq_s8" in src and "__ARM_FEATURE_MVE" in src
    if chain in ("a", "d", "e"):
        assert "vmladavq_s8" in src and "vqrdmulhq_n_s32" in src  # the Helium depthwise kernel
        in_place = json.loads((out / "manifest.json").read_text())["memory_plan"]["inplace"]
        assert any(kernels[n].startswith("optimized mve_dw") for n in in_place), (in_place, kernels)
    # both Helium depthwise kernels: the ring (a's 3x3 over the larger map) and the channel planes (e's small maps)
    dw = [kernels[n.name] for n in graph.nodes if n.op == "conv2d" and n.attrs["depthwise"]]
    if chain == "a":
        assert any(k.startswith("optimized mve_dw:") for k in dw), dw
    if chain == "e":
        assert any(k.startswith("optimized mve_dwc:") for k in dw) and "_s16(dst0 + x * " in src, dw
    if chain != "b":  # TFLite's double rounding without a fused add: the GEMM's vectorised epilogue
        assert "vqrdmulhq_s32(acc, vldrwq_s32(q))" in src


def test_mve_instruction_count_and_flash(chain_a0, tmp_path):
    """Exact instruction count on the M55, fewer than the DSP kernels' on the M4; the int8 Helium
    weights replace the layer's weights in flash instead of adding an int16 copy (the M4's with
    --optimize speed)."""
    from edgekit.api import build
    from edgekit.backends.cortexm.profile import profile

    m55 = build(chain_a0, "cortex-m55", "mps3-an547", tmp_path / "m55")
    prof = profile(m55.out_dir, count=2, write=False).to_json()
    assert prof["vectors"]["min"] == prof["vectors"]["max"]
    n = prof["total"]["instructions"]
    assert n == EXPECTED_INSTRUCTIONS_M55, n
    assert n < EXPECTED_INSTRUCTIONS
    ref = build(chain_a0, "cortex-m55", "mps3-an547", tmp_path / "ref", kernels="reference")
    m4 = build(chain_a0, "cortex-m4", "mps2-an386", tmp_path / "m4", optimize="speed")
    w = {k: r.manifest.memory_breakdown["flash"]["weights"] for k, r in (("m55", m55), ("ref", ref), ("m4", m4))}
    assert w["m55"] < w["m4"] and w["m55"] <= w["ref"] + 1024, w


def test_dense_layers_with_fewer_than_four_inputs_build_and_verify(tmp_path):
    """Issue 17, bug 2: a dense layer of 3 inputs and one of 2 gave the DSP kernel an empty
    weight array (no whole k-quad), and the firmware did not compile. They get the reference
    kernel now; the layer after them (8 inputs) keeps the DSP kernel."""
    from helpers.brevitas_models import export_mlp

    from edgekit.api import build, verify

    onnx = export_mlp(tmp_path / "narrow.onnx", "int8-float", input_shape=(3,), hidden=(2, 8))
    res = build(onnx, "cortex-m4", "mps2-an386", tmp_path / "b")
    kernels = [r["kernel"] for r in res.manifest.layers if r["op"] == "dense"]
    assert kernels[:2] == ["reference (fewer than 4 inputs)"] * 2 and kernels[2].startswith("optimized dense")
    rep = verify(tmp_path / "b", count=32, stages=("host", "qemu"))
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages), rep.stages


def test_balanced_widens_the_layers_that_gain_most_within_the_allowance(chain_a0, monkeypatch):
    """--optimize balanced starts from the int8-weight layout (size) and gives int16 weights to the
    layers that save the most instructions per extra flash byte, within BALANCED_EXTRA_FLASH of the
    model's int8 parameter bytes; no allowance: balanced is size, a whole one: speed."""
    from types import SimpleNamespace

    from edgekit.backends.cortexm.codegen import _select_kernels
    from edgekit.frontends.tflite.importer import import_tflite
    from edgekit.ir.passes import run_default_passes
    from edgekit.ir.planner import plan_memory

    graph, _ = import_tflite(chain_a0)
    run_default_passes(graph)
    plan = plan_memory(graph)
    board = SimpleNamespace(flash=SimpleNamespace(length=1 << 22), stack_bytes=8192)
    reg = kernel_registry.registry()
    # the allowance over int8 records in flash: without dw3_int8_ram, which widens them in the arena instead
    monkeypatch.setattr(type(reg.get("dw3_int8_ram")), "refusal", lambda self, node, graph, plan: "off")

    def kinds(optimize):
        sel = _select_kernels(graph, plan, "optimized", ("dsp",), board, optimize)
        return sel, {n: s.kind for n, s in sel.items() if s.optimized}

    size, size_kinds = kinds("size")
    speed, speed_kinds = kinds("speed")
    balanced, balanced_kinds = kinds("balanced")
    # (conv2d_gemm_widen: int8 weights in flash, widened per call in free arena bytes; balanced only)
    widened = [n for n in balanced_kinds if balanced_kinds[n] not in (size_kinds[n], "conv2d_gemm_widen")]
    assert widened and all(balanced_kinds[n] == speed_kinds[n] for n in widened)
    assert all("balanced:" in balanced[n].describe() for n in widened)
    extra = {n: speed[n].weight_bytes - size[n].weight_bytes for n in size_kinds if speed_kinds[n] != size_kinds[n]}
    params = sum(a.nbytes for a in graph.constants.values())
    assert sum(extra[n] for n in widened) <= kernel_registry.BALANCED_EXTRA_FLASH * params
    gain = {n: reg.get(size[n].kind).instructions_saved_by_int16(size[n]) / extra[n] for n in extra}
    # the widened layers are the best gains per byte that fit (greedy): no unwidened one that fits beats them
    left = kernel_registry.BALANCED_EXTRA_FLASH * params - sum(extra[n] for n in widened)
    assert all(gain[n] <= min(gain[w] for w in widened) or extra[n] > left for n in extra if n not in widened)
    monkeypatch.setattr(kernel_registry, "BALANCED_EXTRA_FLASH", 0.0)
    # no allowance: size's kernels, but for the int8 GEMMs balanced widens per call in free arena bytes
    none = kinds("balanced")[1]
    in_ram = {n for n, k in none.items() if k == "conv2d_gemm_widen"}
    assert {n: k for n, k in none.items() if n not in in_ram} == {n: k for n, k in size_kinds.items() if n not in in_ram}
    assert in_ram and all(size_kinds[n].startswith("conv2d_gemm_int8") for n in in_ram)
    monkeypatch.setattr(kernel_registry, "BALANCED_EXTRA_FLASH", 10.0)
    # a whole allowance: speed's kernels, but for depthwise layers that speed gives dw3's int16 records, which buy
    # nothing over dw3_int8's int8 ones (instructions_saved_by_int16 is 0); dw3_wide's do
    whole = kinds("balanced")[1]
    assert {n: k for n, k in whole.items() if k != "dw3_int8"} == {n: k for n, k in speed_kinds.items() if k != "dw3"}
    assert {n for n, k in whole.items() if k == "dw3_int8"} == {n for n, k in speed_kinds.items() if k == "dw3"}
    assert "dw3_wide" in whole.values()
