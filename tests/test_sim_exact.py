"""The simulator's fast paths (one GEMM per layer, float BLAS where the contract's bound proves
the sums exact, strided windows) against straightforward int64 references kept here.

The references loop over output positions and taps with Python integers' arithmetic in int64,
as the integer contract states it; the package keeps none of them.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.ir.contract import Requant, apply_requant, rshift_rne
from edgekit.ir.graph import Graph, InputQuant, Node, Tensor
from edgekit.ops._gemm import FLOAT32_EXACT_BELOW, FLOAT64_EXACT_BELOW, exact_matmul, plan_gemm, requantized
from edgekit.ops.conv2d import Conv2d
from edgekit.ops.dense import Dense
from edgekit.ops.pool import AvgPool, MaxPool
from edgekit.sim import simulate
from edgekit.sim.simulator import samples_per_block

# --- slow references ---------------------------------------------------------------------


def ref_conv(x, w, b, zp, kernel, stride, dilation, pad, depthwise, mult, out_hw):
    """acc[n, oy, ox, o] = b[o] + sum over taps inside the input of (x - zp) * w, in int64."""
    n, ih, iw, ic = x.shape
    oh, ow = out_hw
    oc = w.shape[-1] if depthwise else w.shape[0]
    acc = np.zeros((n, oh, ow, oc), np.int64)
    xs = x.astype(np.int64) - zp
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kernel[0]):
                for kx in range(kernel[1]):
                    iy = oy * stride[0] + ky * dilation[0] - pad[0]
                    ix = ox * stride[1] + kx * dilation[1] - pad[1]
                    if not (0 <= iy < ih and 0 <= ix < iw):
                        continue
                    pix = xs[:, iy, ix, :]  # (n, ic)
                    if depthwise:
                        acc[:, oy, ox, :] += np.repeat(pix, mult, axis=1) * w[ky, kx].astype(np.int64)
                    else:
                        acc[:, oy, ox, :] += pix @ w[:, ky, kx, :].astype(np.int64).T
    return acc + b.astype(np.int64)


def ref_pool(x, kernel, stride, pad, reduce, fill):
    n, ih, iw, c = x.shape
    oh = (ih + pad[0] + pad[2] - kernel[0]) // stride[0] + 1
    ow = (iw + pad[1] + pad[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, oh, ow, c), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            taps = []
            for ky in range(kernel[0]):
                for kx in range(kernel[1]):
                    iy, ix = oy * stride[0] + ky - pad[0], ox * stride[1] + kx - pad[1]
                    inside = 0 <= iy < ih and 0 <= ix < iw
                    taps.append(x[:, iy, ix, :].astype(np.int64) if inside else np.full((n, c), fill, np.int64))
            out[:, oy, ox, :] = reduce(np.stack(taps), axis=0)
    return out


def ref_rshift_rne(x, s):
    """floor, remainder, ties to the even floor: Python integers, one element at a time."""
    out = []
    for xi, si in zip(np.ravel(x).tolist(), np.broadcast_to(s, np.shape(x)).ravel().tolist()):
        if si == 0:
            out.append(xi)
            continue
        q, r = divmod(xi, 1 << si)
        half = 1 << (si - 1)
        out.append(q + (r > half or (r == half and q % 2 == 1)))
    return np.array(out, np.int64).reshape(np.shape(x))


# --- a one-node graph around an operator ---------------------------------------------------

def tensor(name, shape, bits=8, signed=True, zp=0, const=False, dtype=None):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = dtype or {8: "int8", 16: "int16", 32: "int32"}.get(bits, "int32") if signed else "uint8"
    return Tensor(name, tuple(shape), dtype, bits, signed, [1.0], zp, lo, hi, const)


def one_node_graph(op, attrs, x_t, y_t, consts: dict[str, np.ndarray]):
    tensors = {x_t.name: x_t, y_t.name: y_t}
    for name, arr in consts.items():
        tensors[name] = tensor(name, arr.shape, bits=32, const=True)
    node = Node("node", op, [x_t.name, *consts], [y_t.name], attrs)
    iq = InputQuant(tuple(x_t.shape), 1.0, x_t.zero_point, x_t.qmin, x_t.qmax, x_t.bits, x_t.signed)
    return Graph(tensors, [node], [x_t.name], [y_t.name], dict(consts), iq), node


def out_size(i, k, s, d, p0, p1):
    return (i + p0 + p1 - d * (k - 1) - 1) // s + 1


CONV_CASES = [  # (ih, iw, ic, oc or mult, kernel, stride, dilation, pad, depthwise)
    (7, 6, 3, 5, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), False),
    (9, 8, 4, 6, (3, 2), (2, 1), (1, 2), (2, 0, 1, 1), False),
    (1, 17, 5, 4, (1, 5), (1, 2), (1, 3), (0, 2, 0, 2), False),  # 1D, dilated, strided
    (6, 6, 8, 7, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), False),  # pointwise
    (5, 5, 2, 3, (5, 5), (2, 2), (1, 1), (2, 2, 2, 2), False),  # window wider than the input
    (8, 7, 6, 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), True),
    (9, 9, 3, 2, (3, 3), (2, 2), (2, 2), (2, 1, 0, 3), True),  # depth multiplier 2
    (1, 20, 4, 3, (1, 7), (1, 3), (1, 2), (0, 3, 0, 1), True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{'dw' if c[-1] else 'conv'}{c[4]}s{c[5]}d{c[6]}p{c[7]}")
@pytest.mark.parametrize("wide", [False, True], ids=["int8", "int16-acts"])
def test_conv_matches_int64_reference(case, wide):
    ih, iw, ic, oc_or_mult, kernel, stride, dilation, pad, depthwise = case
    rng = np.random.default_rng(hash(case) % 2**32)
    oh, ow = out_size(ih, kernel[0], stride[0], dilation[0], pad[0], pad[2]), out_size(iw, kernel[1], stride[1], dilation[1], pad[1], pad[3])
    bits = 16 if wide else 8
    x_t = tensor("x", (ih, iw, ic), bits=bits, zp=-3 if not wide else 100)
    if depthwise:
        oc = ic * oc_or_mult
        w = rng.integers(-128, 128, (kernel[0], kernel[1], oc))
    else:
        oc = oc_or_mult
        w = rng.integers(-128, 128, (oc, kernel[0], kernel[1], ic))
    b = rng.integers(-1000, 1000, oc)
    x = rng.integers(x_t.qmin, x_t.qmax + 1, (5, ih, iw, ic))
    x[0] = x_t.qmin  # extremes: the sums' largest magnitudes
    x[1] = x_t.qmax
    attrs = {"kernel": list(kernel), "stride": list(stride), "dilation": list(dilation), "pad": list(pad),
             "depthwise": depthwise, "depth_multiplier": oc_or_mult if depthwise else 1, "requant": None}
    y_t = tensor("y", (oh, ow, oc), bits=32)
    graph, node = one_node_graph("conv2d", attrs, x_t, y_t, {"w": w, "b": b})
    want = ref_conv(x, w, b, x_t.zero_point, kernel, stride, dilation, pad, depthwise, attrs["depth_multiplier"], (oh, ow))
    got = Conv2d().simulate(node, [x, w, b], graph)[0]
    np.testing.assert_array_equal(got, want)
    # the whole simulator (blocks of the batch, range checks) agrees too
    np.testing.assert_array_equal(simulate(graph, x)["y"], want)


@pytest.mark.parametrize("stride,pad", [((2, 2), (1, 1, 1, 1)), ((3, 3), (2, 2, 2, 2))])
def test_dilated_pointwise_conv_on_a_large_batch(stride, pad):
    """Fuzz seed 3000181: a 1x1 convolution with dilation 2 and stride 2 over a 6x1 input killed the
    process (SIGSEGV inside oneDNN, chosen by PyTorch from batch ~16 on); the dilation of a size-1
    kernel axis means nothing and is dropped before PyTorch sees it."""
    rng = np.random.default_rng(3000181)
    ih, iw, ic, oc, kernel, dilation = 6, 1, 2, 6, (1, 1), (2, 2)
    oh, ow = out_size(ih, 1, stride[0], 2, pad[0], pad[2]), out_size(iw, 1, stride[1], 2, pad[1], pad[3])
    x_t = tensor("x", (ih, iw, ic), bits=8, zp=0)
    w = rng.integers(-64, 64, (oc, 1, 1, ic))
    b = rng.integers(-100, 100, oc)
    x = rng.integers(0, 4, (64, ih, iw, ic))
    attrs = {"kernel": list(kernel), "stride": list(stride), "dilation": list(dilation), "pad": list(pad),
             "depthwise": False, "depth_multiplier": 1, "requant": None}
    graph, _ = one_node_graph("conv2d", attrs, x_t, tensor("y", (oh, ow, oc), bits=32), {"w": w, "b": b})
    want = ref_conv(x, w, b, 0, kernel, stride, dilation, pad, False, 1, (oh, ow))
    np.testing.assert_array_equal(simulate(graph, x)["y"], want)


def test_conv_with_per_channel_requant_and_residual():
    rng = np.random.default_rng(7)
    x_t = tensor("x", (6, 6, 4), zp=5)
    r_t = tensor("r", (6, 6, 8), zp=-2)
    w = rng.integers(-128, 128, (8, 3, 3, 4))
    b = rng.integers(-500, 500, 8)
    rq = Requant(tuple(int(m) for m in rng.integers(1 << 29, 1 << 31, 8)), tuple(int(s) for s in rng.integers(36, 42, 8)),
                 3, -128, 127, False)
    res = {"in_requant": [Requant((1,), (1,), 0, -(1 << 20), 1 << 20, True), Requant((3,), (0,), 0, -(1 << 20), 1 << 20, True)],
           "requant": Requant((1 << 30,), (31,), -1, -128, 127, False)}
    attrs = {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1], "pad": [1, 1, 1, 1], "depthwise": False,
             "depth_multiplier": 1, "requant": rq, "residual": res}
    y_t = tensor("y", (6, 6, 8))
    tensors = {"x": x_t, "r": r_t, "y": y_t, "w": tensor("w", w.shape, const=True), "b": tensor("b", b.shape, bits=32, const=True)}
    node = Node("conv", "conv2d", ["x", "w", "b", "r"], ["y"], attrs)
    graph = Graph(tensors, [node], ["x"], ["y"], {"w": w, "b": b}, InputQuant((6, 6, 4), 1.0, 5, -128, 127, 8, True))
    x = rng.integers(-128, 128, (4, 6, 6, 4))
    r = rng.integers(-128, 128, (4, 6, 6, 8))
    acc = ref_conv(x, w, b, 5, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), False, 1, (6, 6))
    y = apply_requant(acc, rq)
    want = apply_requant(apply_requant(y - 3, res["in_requant"][0]) + apply_requant(r + 2, res["in_requant"][1]), res["requant"])
    np.testing.assert_array_equal(Conv2d().simulate(node, [x, w, b, r], graph)[0], want)


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_dense_matches_int64_reference(bits):
    rng = np.random.default_rng(bits)
    x_t = tensor("x", (3, 4, 50), bits=bits, zp=0)
    w = rng.integers(-128, 128, (17, 600))
    b = rng.integers(-(1 << 20), 1 << 20, 17)
    x = rng.integers(x_t.qmin, x_t.qmax + 1, (9, 3, 4, 50))
    x[0], x[1] = x_t.qmin, x_t.qmax
    graph, node = one_node_graph("dense", {"requant": None}, x_t, tensor("y", (17,), bits=32), {"w": w, "b": b})
    want = x.reshape(9, -1).astype(np.int64) @ w.T + b
    np.testing.assert_array_equal(Dense().simulate(node, [x, w, b], graph)[0], want)


# --- the exactness decision, on both sides of each bound -----------------------------------

def extreme_rows(w: np.ndarray, x_abs: int) -> np.ndarray:
    """Inputs that reach the bound: for each output row, x = +-x_abs with the weights' signs."""
    return np.where(w >= 0, x_abs, -x_abs).astype(np.int64)


def test_float32_right_below_the_bound_is_one_gemm_and_exact():
    x_abs = 255
    k = (FLOAT32_EXACT_BELOW - 1) // (x_abs * 127)  # every term 255 * 127: the bound just below 2^24
    w = np.full((3, k), 127, np.int64)
    w[1, ::2] = -127
    plan = plan_gemm(w, np.zeros(len(w), np.int64), -x_abs, x_abs)
    assert plan.bound < FLOAT32_EXACT_BELOW <= plan.bound + x_abs * 127
    assert plan.dtype is np.float32 and plan.pieces == ((0, k),)
    x = extreme_rows(w, x_abs)
    got = exact_matmul(x.astype(np.float32), np.ascontiguousarray(w.T, np.float32), plan)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.int64), x @ w.T)


def test_float32_above_the_bound_is_split_and_stays_exact():
    x_abs = 255
    k = 3 * (FLOAT32_EXACT_BELOW // (x_abs * 127)) // 2 + 1  # the bound about 1.5 * 2^24: two pieces
    w = np.full((2, k), 127, np.int64)
    w[1, 1::3] = -127
    x = extreme_rows(w, x_abs) + np.array([[0], [0]])  # row i pushes output i to its bound
    x[:, ::7] -= np.sign(x[:, ::7])  # odd sums: float32 rounding would show above 2^24
    plan = plan_gemm(w, np.zeros(len(w), np.int64), -x_abs, x_abs)
    assert plan.bound >= FLOAT32_EXACT_BELOW and plan.dtype is np.float32 and len(plan.pieces) == 2
    want = x @ w.T
    got = exact_matmul(x.astype(np.float32), np.ascontiguousarray(w.T, np.float32), plan)
    np.testing.assert_array_equal(got, want)
    # one float32 GEMM would not be exact here: the split is what keeps it so
    naive = (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64)
    assert not np.array_equal(naive, want)


def test_bias_counts_in_the_bound():
    w = np.full((1, 100), 127, np.int64)
    below = plan_gemm(w, np.zeros(1, np.int64), -128, 127)
    assert below.float_sums and below.dtype is np.float32
    over = plan_gemm(w, np.array([FLOAT32_EXACT_BELOW - below.bound]), -128, 127)
    assert over.bound == FLOAT32_EXACT_BELOW and not (over.dtype is np.float32 and over.float_sums)
    bias = np.array([FLOAT32_EXACT_BELOW - 1])
    plan = plan_gemm(w, bias, -128, 127)
    x = np.zeros((1, 100), np.int64)
    x[0, 0] = 2  # acc + bias = 2^24 + 253: float32 would round it
    acc = exact_matmul(x.astype(plan.dtype), np.ascontiguousarray(w.T, plan.dtype), plan)
    np.testing.assert_array_equal(requantized(acc, bias, None), x @ w.T + bias)
    assert (x @ w.T).astype(np.float32) + np.float32(bias) != x @ w.T + bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift_requantization_in_float_equals_the_integer_one(dtype):
    """rint(acc * 2^-s) in float against the contract's rshift_rne, on every tie around zero
    and random sums, per channel (shift 0 included) and per tensor."""
    rng = np.random.default_rng(9)
    shifts = (0, 1, 2, 3, 5, 8, 13, 20)
    ties = np.concatenate([(np.arange(-64, 64) * 2 + 1) << max(s - 1, 0) for s in shifts])
    acc = np.concatenate([ties, rng.integers(-(1 << 23), 1 << 23, 20000)])
    acc = acc[: acc.size // len(shifts) * len(shifts)].reshape(-1, len(shifts))
    bias = rng.integers(-1000, 1000, len(shifts))
    for rq in (Requant((1,) * len(shifts), shifts, -5, -100, 90, True), Requant((1,), (4,), 3, -128, 127, True)):
        want = apply_requant(acc + bias, rq)
        got = requantized(acc.astype(dtype), bias, rq)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    # a Q31 multiplier takes the integer path
    rq = Requant(tuple(int(m) for m in rng.integers(1 << 30, 1 << 31, len(shifts))), tuple(s + 31 for s in shifts), 0, -128, 127, False)
    np.testing.assert_array_equal(requantized(acc.astype(dtype), bias, rq), apply_requant(acc + bias, rq))


def test_float64_when_float32_needs_too_many_pieces():
    x_abs = 1 << 15  # 16-bit activations, 16-bit weights: each term near 2^30
    w = np.full((2, 40), (1 << 15) - 1, np.int64)
    plan = plan_gemm(w, np.zeros(len(w), np.int64), -x_abs, x_abs - 1)
    assert plan.dtype is np.float64 and plan.bound < FLOAT64_EXACT_BELOW
    x = extreme_rows(w, x_abs) - 1
    got = exact_matmul(x.astype(np.float64), np.ascontiguousarray(w.T, np.float64), plan)
    np.testing.assert_array_equal(got, x @ w.T)


def test_int64_above_the_float64_bound():
    x_abs = (1 << 40) + 1
    w = np.array([[(1 << 13) + 1] * 3, [-(1 << 13) - 3, (1 << 13) + 5, 7]], np.int64)
    plan = plan_gemm(w, np.zeros(len(w), np.int64), -x_abs, x_abs)
    assert plan.bound >= FLOAT64_EXACT_BELOW and plan.dtype is np.int64
    x = np.array([[x_abs, x_abs - 2, x_abs], [-x_abs, x_abs - 6, 1]], np.int64)
    want = np.array([[sum(int(a) * int(c) for a, c in zip(row, wr)) for wr in w] for row in x], np.int64)
    np.testing.assert_array_equal(exact_matmul(x, np.ascontiguousarray(w.T), plan), want)
    assert not np.array_equal((x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64), want)


def test_dense_on_both_sides_of_the_float32_bound():
    """The dense kernel, through the plan, on inputs at the bound: 8-bit (one float32 GEMM) and
    16-bit (float32 pieces or float64) activations give the int64 reference's sums."""
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (4, 700))
    b = np.zeros(4, np.int64)
    for bits in (8, 16):
        x_t = tensor("x", (700,), bits=bits)
        x = np.stack([extreme_rows(w[i], -x_t.qmin) for i in range(4)])
        x = np.clip(x, x_t.qmin, x_t.qmax)
        graph, node = one_node_graph("dense", {"requant": None}, x_t, tensor("y", (4,), bits=32), {"w": w, "b": b})
        np.testing.assert_array_equal(Dense().simulate(node, [x, w, b], graph)[0], x @ w.T)


# --- pools, requantization, blocks ---------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 1), (1, 1, 1, 0)),
                                                ((1, 4), (1, 3), (0, 2, 0, 1))])
def test_pools_match_reference(kernel, stride, pad):
    rng = np.random.default_rng(11)
    x_t = tensor("x", (7, 9, 3), zp=4)
    x = rng.integers(-128, 128, (6, 7, 9, 3))
    oh = (7 + pad[0] + pad[2] - kernel[0]) // stride[0] + 1
    ow = (9 + pad[1] + pad[3] - kernel[1]) // stride[1] + 1
    y_t = tensor("y", (oh, ow, 3), zp=4)
    graph, node = one_node_graph("maxpool", {"kernel": list(kernel), "stride": list(stride), "pad": list(pad)}, x_t, y_t, {})
    want = ref_pool(x, kernel, stride, pad, np.max, np.iinfo(np.int64).min)
    np.testing.assert_array_equal(MaxPool().simulate(node, [x], graph)[0], want)
    # float32 codes (a convolution's output): the same maxima, padding included, still float32
    got = MaxPool().simulate(node, [x.astype(np.float32)], graph)[0]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    attrs = {"kernel": list(kernel), "stride": list(stride), "pad": list(pad), "num": 1, "den": kernel[0] * kernel[1],
             "mode": "ROUND", "requant": None, "zero_point": 4, "lo": -128, "hi": 127}
    graph, node = one_node_graph("avgpool", attrs, x_t, y_t, {})
    sums = ref_pool(x - 4, kernel, stride, pad, np.sum, 0)
    den = kernel[0] * kernel[1]
    want = np.clip(np.array([int(q) for q in ref_div_rne(sums.ravel(), den)]).reshape(sums.shape) + 4, -128, 127)
    np.testing.assert_array_equal(AvgPool().simulate(node, [x], graph)[0], want)


@pytest.mark.parametrize("zp", [0, 5])
def test_global_average_pool_matches_reference(zp):
    """Global pooling sums the map in one reduction; int64 and float32 codes give the reference's sums."""
    rng = np.random.default_rng(12)
    x_t = tensor("x", (6, 5, 4), signed=False, zp=zp)
    y_t = tensor("y", (1, 1, 4), signed=False, zp=zp)
    attrs = {"kernel": [6, 5], "stride": [1, 1], "pad": [0, 0, 0, 0], "num": 1, "den": 30, "mode": "ROUND",
             "requant": None, "zero_point": zp, "lo": 0, "hi": 255}
    graph, node = one_node_graph("avgpool", attrs, x_t, y_t, {})
    x = rng.integers(0, 256, (7, 6, 5, 4))
    x[0] = 255  # the largest sum
    sums = ref_pool(x - zp, (6, 5), (1, 1), (0, 0, 0, 0), np.sum, 0)
    want = np.clip(np.array([int(q) for q in ref_div_rne(sums.ravel(), 30)]).reshape(sums.shape) + zp, 0, 255)
    for codes in (x, x.astype(np.float32)):
        got = AvgPool().simulate(node, [codes], graph)[0]
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def ref_div_rne(nums, den):
    for n in nums.tolist():
        q, r = divmod(n, den)
        yield q + (2 * r > den or (2 * r == den and q % 2 == 1))


def test_rshift_rne_matches_integer_reference():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.integers(-(1 << 62), 1 << 62, 4000), rng.integers(-70, 70, 2000),
                        np.array([(1 << 62) - 1, -(1 << 62), 0, 1, -1, 2, -2, 3, -3])])
    for s in (0, 1, 2, 7, 31, 62):
        np.testing.assert_array_equal(rshift_rne(x, s), ref_rshift_rne(x, s))
    s = rng.integers(0, 63, x.size)  # per element, 0 included
    np.testing.assert_array_equal(rshift_rne(x, s), ref_rshift_rne(x, s))
    # exact halves of every parity
    halves = (np.arange(-40, 40) * 2 + 1) << 4
    np.testing.assert_array_equal(rshift_rne(halves, 5), ref_rshift_rne(halves, 5))


def test_blocked_batch_equals_one_block():
    """Samples are simulated in blocks; the blocks' results join to the one-block result."""
    rng = np.random.default_rng(2)
    x_t = tensor("x", (40, 40, 16), zp=1)
    w = rng.integers(-128, 128, (16, 3, 3, 16))
    b = rng.integers(-100, 100, 16)
    attrs = {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1], "pad": [1, 1, 1, 1], "depthwise": False,
             "depth_multiplier": 1, "requant": None}
    graph, node = one_node_graph("conv2d", attrs, x_t, tensor("y", (40, 40, 16), bits=32), {"w": w, "b": b})
    n = samples_per_block(graph) * 2 + 3  # three blocks, the last one short
    assert samples_per_block(graph) < n
    x = rng.integers(-128, 128, (n, 40, 40, 16))
    seconds = {}
    got = simulate(graph, x, seconds=seconds)["y"]
    np.testing.assert_array_equal(got, Conv2d().simulate(node, [x, w, b], graph)[0])
    assert set(seconds) == {"node"}
    full = simulate(graph, x, keep_all=True)
    assert full["w"] is w and full["y"].shape == (n, 40, 40, 16)


@pytest.mark.parametrize("channels,count", [(1, 3), (5, 1), (7, 15), (40, 255)])
def test_thresholds_passed_matches_counting(channels, count):
    from edgekit.ops.threshold import counts_by_table, thresholds_passed

    rng = np.random.default_rng(channels * 1000 + count)
    thresholds = rng.integers(-(1 << 20), 1 << 20, (channels, count))  # unsorted, with repeats below
    thresholds[:, ::3] = thresholds[:, :1]
    x = rng.integers(-(1 << 21), 1 << 21, (6, 2, 3, channels))
    x[0, 0, 0] = thresholds[:, 0]  # on a threshold: counts it
    x[0, 0, 1] = thresholds[:, 0] - 1
    want = np.zeros(x.shape, np.int64)
    for j in range(count):
        want += x >= thresholds[:, j]
    np.testing.assert_array_equal(thresholds_passed(x, thresholds), want)
    # the tabulated path, over a small input range (an 8-bit input quantizer's)
    small = rng.integers(-128, 128, (channels, count))
    xs = rng.integers(-128, 128, (9, channels))
    want = np.zeros(xs.shape, np.int64)
    for j in range(count):
        want += xs >= small[:, j]
    np.testing.assert_array_equal(counts_by_table(xs, small, -128, 127), want)


def count_reference(x, thresholds):
    """#{j : x[..., c] >= T[c, j]} with Python integers, one element at a time."""
    x = np.asarray(x, np.int64)
    rows = np.broadcast_to(thresholds, (x.shape[-1], thresholds.shape[1])).tolist()
    flat = x.reshape(-1, x.shape[-1]).tolist()
    return np.array([[sum(int(v) >= int(t) for t in rows[c]) for c, v in enumerate(row)] for row in flat],
                    np.int64).reshape(x.shape)


def threshold_graph(shape, thresholds, x_bits, out_min=0, step=1):
    x_t = tensor("x", shape, bits=x_bits)
    graph, node = one_node_graph("threshold", {"out_min": out_min, "step": step, "function": "test"}, x_t,
                                 tensor("y", shape, bits=8), {"t": thresholds})
    return graph, node


@pytest.mark.parametrize("count", [1, 7, 32, 33, 255])
@pytest.mark.parametrize("as_float32", [False, True])
def test_threshold_paths_match_counting(count, as_float32):
    """Every counting path (comparisons up to COMPARE_LIMIT thresholds, table or binary search
    beyond), fed int64 or float32 codes, equals counting with Python integers."""
    from edgekit.ops.threshold import COMPARE_LIMIT, Threshold

    rng = np.random.default_rng(count)
    channels = 6
    thresholds = rng.integers(-3000, 3000, (channels, count))
    thresholds[:, ::4] = thresholds[:, :1]  # repeats
    x = rng.integers(-3500, 3500, (9, 2, channels))
    x[0, 0] = thresholds[:, 0]  # on a threshold: counts it
    x[0, 1] = thresholds[:, 0] - 1
    graph, node = threshold_graph((2, channels), thresholds, 16, out_min=-1, step=2)
    op = Threshold()
    plan = op.prepare_node(node, graph)
    assert plan.method == ("compare" if count <= COMPARE_LIMIT else "table")
    got = op.simulate(node, [x.astype(np.float32) if as_float32 else x, thresholds], graph, plan)[0]
    np.testing.assert_array_equal(got, -1 + 2 * count_reference(x, thresholds))
    # without a plan (a caller outside the simulator), the same
    np.testing.assert_array_equal(op.simulate(node, [x, thresholds], graph)[0], got)


def test_threshold_comparison_in_float32_at_and_beyond_its_bound():
    """Float32 comparisons are exact for any float32 codes once each threshold is rounded up to the
    next float32; int64 codes go to float32 only when the declared range is within 2^24."""
    from edgekit.ops.threshold import Threshold, float32_at_or_above

    big = 1 << 24
    thresholds = np.array([[big - 1, big, big + 1, big + 3, -big - 1]])  # 2^24 + 1 is no float32
    rounded = float32_at_or_above(thresholds)
    np.testing.assert_array_equal(rounded.astype(np.int64), [[big - 1, big, big + 2, big + 4, -big]])
    x = np.array([[big - 1], [big], [big + 2], [big + 4], [-big], [-big - 2]], np.int64)
    want = count_reference(x, thresholds)
    # float32 codes (every value here is a float32): exact through the rounded-up thresholds
    op = Threshold()
    graph, node = threshold_graph((1,), thresholds, 32)
    plan = op.prepare_node(node, graph)
    np.testing.assert_array_equal(op.simulate(node, [x.astype(np.float32), thresholds], graph, plan)[0], want)
    # rounding to nearest instead would count 2^24 as passing 2^24 + 1
    assert (x.astype(np.float32) >= thresholds.astype(np.float32)).sum() != want.sum()
    # int64 codes with a declared range at 2^24: converted to float32, exact
    at_bound = tensor("x", (1,), bits=32)
    at_bound.qmin, at_bound.qmax = -big, big
    graph.tensors["x"] = at_bound
    plan = op.prepare_node(node, graph)
    assert plan.float32_input_exact
    np.testing.assert_array_equal(op.simulate(node, [x[:5], thresholds], graph, plan)[0], want[:5])
    # one beyond: 2^24 + 1 is no float32, so the codes are compared as int64
    beyond = np.array([[big + 1], [big + 3], [-big - 1]], np.int64)
    at_bound.qmin, at_bound.qmax = -big - 1, big + 3
    plan = op.prepare_node(node, graph)
    assert not plan.float32_input_exact
    np.testing.assert_array_equal(op.simulate(node, [beyond, thresholds], graph, plan)[0],
                                  count_reference(beyond, thresholds))
    assert (beyond.astype(np.float32) >= rounded).sum() != count_reference(beyond, thresholds).sum()


def test_mul_dbl_equals_the_gemmlowp_composition():
    """TFLite's double rounding with fewer passes equals rdbp(srdhm(wrap32(x << left), M), right)."""
    from edgekit.ir.contract import INT32_MAX, INT32_MIN, mul_dbl, rdbp, srdhm, tflite_requant

    def composed(x, m, s, left_shift=0):
        s = np.asarray(s, np.int64)
        left = np.maximum(31 - s, 0) + left_shift
        xs = ((np.asarray(x, np.int64) << left) + 2**31) % 2**32 - 2**31
        return rdbp(srdhm(xs, m), np.maximum(s - 31, 0))

    rng = np.random.default_rng(13)
    x = np.concatenate([rng.integers(INT32_MIN, INT32_MAX + 1, 5000), rng.integers(-3000, 3000, 5000),
                        np.array([INT32_MIN, INT32_MAX, 0, -1, 1])])
    for ratio in (0.3, 0.0007, 1e-6, 0.5, 1.7, 3.0, 2.0 ** -20):
        rq = tflite_requant(np.array([ratio]), 0, -128, 127)
        m, s = np.asarray(rq.multiplier), np.asarray(rq.shift)
        np.testing.assert_array_equal(mul_dbl(x, m, s), composed(x, m, s))
    # per channel, ties of the final division, a left shift that wraps, out-of-int32 inputs
    rq = tflite_requant(rng.uniform(1e-5, 2.0, 8), 0, -128, 127)
    m, s = np.asarray(rq.multiplier), np.asarray(rq.shift)
    xc = rng.integers(-(1 << 20), 1 << 20, (700, 8))
    np.testing.assert_array_equal(mul_dbl(xc, m, s), composed(xc, m, s))
    np.testing.assert_array_equal(mul_dbl(xc, m, s, left_shift=20), composed(xc, m, s, 20))
    big = np.array([INT32_MAX + 5, INT32_MIN - 7, 1 << 40])
    np.testing.assert_array_equal(mul_dbl(big, m[:1], s[:1]), composed(big, m[:1], s[:1]))
    ties = (np.arange(-50, 50) * 2 + 1) << 30  # (x * 2^31) products whose final shift lands on halves
    np.testing.assert_array_equal(mul_dbl(ties, np.array([1 << 30]), np.array([33])),
                                  composed(ties, np.array([1 << 30]), np.array([33])))
    assert mul_dbl(np.int64(-5), 1 << 30, 33) == composed(np.int64(-5), 1 << 30, 33)


# --- PyTorch's direct convolution where float32 is exact (ops/_direct_conv.py) --------------

# (input H, W, kernel, padding, output H, W): a 2D layer and a 1D one (H = 1, as har-cnn's)
BOUND_SHAPES = {"2d": (6, 5, (3, 3), (1, 1, 1, 1)), "1d": (1, 9, (1, 3), (0, 1, 0, 1))}


def conv_at_bound_graph(bias_over: int, depthwise: bool, shape: str = "2d"):
    """A 3x3 (or 1x3, 1D) conv on 16-bit activations whose bound (bias included) is
    2^24 - 1 + ``bias_over``; sample 0 (all inputs -2^15, positive weights, a negative bias)
    reaches it at the interior pixels, with an odd sum (float32 rounding would show above 2^24)."""
    ih, iw, kernel, pad = BOUND_SHAPES[shape]
    x_t = tensor("x", (ih, iw, 4), bits=16)
    x_abs = -x_t.qmin
    if depthwise:
        w = np.full((*kernel, 4), 7, np.int64)
        per_out = np.abs(w).reshape(-1, 4).sum(axis=0)
        oc = 4
    else:
        w = np.full((3, *kernel, 4), 5, np.int64)
        w[1] = 3
        per_out = np.abs(w).reshape(3, -1).sum(axis=1)
        oc = 3
    b = -(FLOAT32_EXACT_BELOW - 1 + bias_over - per_out * x_abs).astype(np.int64)
    attrs = {"kernel": list(kernel), "stride": [1, 1], "dilation": [1, 1], "pad": list(pad), "depthwise": depthwise,
             "depth_multiplier": 1, "requant": None}
    graph, node = one_node_graph("conv2d", attrs, x_t, tensor("y", (ih, iw, oc), bits=32), {"w": w, "b": b})
    x = np.random.default_rng(4).integers(x_t.qmin, x_t.qmax + 1, (16, ih, iw, 4))
    x[0] = x_t.qmin
    return graph, node, x, w, b


def ref_conv_at_bound(graph, node, x, w, b):
    a = node.attrs
    return ref_conv(x, w, b, 0, a["kernel"], (1, 1), (1, 1), a["pad"], a["depthwise"], 1, x.shape[1:3])


@pytest.mark.parametrize("shape", list(BOUND_SHAPES))
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_direct_conv_right_below_the_float32_bound_is_exact(depthwise, shape, monkeypatch):
    import edgekit.ops.conv2d as conv2d

    graph, node, x, w, b = conv_at_bound_graph(0, depthwise, shape)
    a = conv2d.Conv2dAttrs(**node.attrs)
    plan = plan_gemm(w.reshape(-1, w.shape[-1]).T if depthwise else w.reshape(w.shape[0], -1), b, -(1 << 15), (1 << 15) - 1)
    assert plan.bound == FLOAT32_EXACT_BELOW - 1 and plan.float_sums and plan.dtype is np.float32
    used = []
    real = conv2d.float32_conv
    monkeypatch.setattr(conv2d, "float32_conv", lambda *args: used.append(real(*args)) or used[-1])
    want = ref_conv_at_bound(graph, node, x, w, b)
    assert np.abs(want).max() == FLOAT32_EXACT_BELOW - 1  # sample 0 reaches the bound
    got = Conv2d().simulate(node, [x, w, b], graph)[0]
    assert used and used[0] is not None and used[0].dtype == np.float32  # PyTorch computed it
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", list(BOUND_SHAPES))
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_direct_conv_is_not_used_above_the_float32_bound(depthwise, shape, monkeypatch):
    import torch

    import edgekit.ops.conv2d as conv2d

    graph, node, x, w, b = conv_at_bound_graph(2, depthwise, shape)
    used = []
    real = conv2d.float32_conv
    monkeypatch.setattr(conv2d, "float32_conv", lambda *args: used.append(real(*args)) or used[-1])
    want = ref_conv_at_bound(graph, node, x, w, b)
    np.testing.assert_array_equal(Conv2d().simulate(node, [x, w, b], graph)[0], want)
    assert not used
    # PyTorch's float32 convolution would round there: the bound is what keeps the sums exact
    xt = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)
    wt = torch.from_numpy((w.transpose(2, 0, 1)[:, None] if depthwise else w.transpose(0, 3, 1, 2)).astype(np.float32).copy())
    naive = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b.astype(np.float32)),
                                       padding=node.attrs["pad"][:2], groups=4 if depthwise else 1).permute(0, 2, 3, 1).numpy()
    assert not np.array_equal(naive.astype(np.int64), want)


def test_direct_conv_refuses_inexact_torch_settings():
    """NNPACK (PyTorch's choice when oneDNN is off: Winograd, FFT) and reduced-precision float32
    modes are refused (None: the caller takes the GEMM path); the simulator stays exact."""
    import torch

    from edgekit.ops._direct_conv import float32_conv

    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (16, 12, 12, 8))
    w = rng.integers(-128, 128, (8, 8, 3, 3))
    b = np.zeros(8, np.int64)
    args = (x, 0, w, b, (1, 1, 1, 1), (1, 1), (1, 1), 1, (12, 12))
    assert float32_conv(*args) is not None
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch._C._select_conv_backend(torch.zeros(16, 8, 12, 12), torch.zeros(8, 8, 3, 3), None, [1, 1], [1, 1],
                                             [1, 1], False, [0, 0], 1).name.startswith("Nnpack")
        assert float32_conv(*args) is None
    saved = torch.backends.mkldnn.conv.fp32_precision
    try:
        torch.backends.mkldnn.conv.fp32_precision = "bf16"
        assert float32_conv(*args) is None
    finally:
        torch.backends.mkldnn.conv.fp32_precision = saved
    # and through the simulator with oneDNN off: the im2col GEMM, exact
    x_t = tensor("x", (12, 12, 8))
    attrs = {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1], "pad": [1, 1, 1, 1], "depthwise": False,
             "depth_multiplier": 1, "requant": None}
    wc = w.transpose(0, 2, 3, 1).copy()
    graph, _ = one_node_graph("conv2d", attrs, x_t, tensor("y", (12, 12, 8), bits=32), {"w": wc, "b": b})
    with torch.backends.mkldnn.flags(enabled=False):
        got = simulate(graph, x)["y"]
    np.testing.assert_array_equal(got, ref_conv(x, wc, b, 0, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), False, 1, (12, 12)))


# --- residual adds and requantizations in float32 ------------------------------------------

ADD_REQUANTS = [  # (ra, rb, rq): as resnet8's fused residuals, with zero points, clamps and per-channel shifts
    (Requant((1,), (0,), 0, -(1 << 31), (1 << 31) - 1, True), Requant((8,), (0,), 0, -(1 << 31), (1 << 31) - 1, True),
     Requant((1,), (2,), 0, 0, 255, True)),
    (Requant((1,), (1,), 3, -(1 << 31), (1 << 31) - 1, True), Requant((1,), (0,), -2, -100, 100, True),
     Requant((1, 1, 1, 1), (0, 1, 3, 2), -7, -128, 127, True)),
    (Requant((2,), (0,), 0, -(1 << 31), (1 << 31) - 1, True), Requant((1,), (3,), 0, -(1 << 31), (1 << 31) - 1, True), None),
    # a Q31 multiplier: the int64 path
    (Requant((1,), (0,), 0, -(1 << 31), (1 << 31) - 1, True), Requant((1 << 30,), (31,), 0, -(1 << 31), (1 << 31) - 1, False),
     Requant((1,), (1,), 0, -128, 127, True)),
]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("case", range(len(ADD_REQUANTS)))
def test_add_requantized_equals_the_int64_arithmetic(case, bits):
    from edgekit.ops._gemm import add_requantized

    ra, rb, rq = ADD_REQUANTS[case]
    rng = np.random.default_rng(case * 10 + bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    a = rng.integers(lo, hi + 1, (64, 3, 4))
    b = rng.integers(lo, hi + 1, (64, 3, 4))
    a[0], b[0], a[1], b[1] = lo, lo, hi, hi
    acc = apply_requant(a - 5, ra) + apply_requant(b + 3, rb)
    want = apply_requant(acc, rq) if rq is not None else acc
    np.testing.assert_array_equal(add_requantized(a, 5, (lo, hi), b, -3, (lo, hi), ra, rb, rq), want)
    # a float32 first operand (a conv's output kept in float) gives the same
    got = add_requantized(a.astype(np.float32), 5, (lo, hi), b, -3, (lo, hi), ra, rb, rq)
    np.testing.assert_array_equal(got, want)


def test_float_requant_exactness_decision():
    from edgekit.ops._gemm import float_requant, float_requant_exact

    shift = Requant((1,), (3,), 0, -(1 << 31), (1 << 31) - 1, True)
    assert float_requant_exact(shift, FLOAT32_EXACT_BELOW - 2) and not float_requant_exact(shift, FLOAT32_EXACT_BELOW)
    times8 = Requant((8,), (0,), 0, -(1 << 31), (1 << 31) - 1, True)
    edge = (FLOAT32_EXACT_BELOW - 2) // 8
    assert float_requant_exact(times8, edge) and not float_requant_exact(times8, edge + 1)
    q31 = Requant((1 << 30,), (31,), 0, -128, 127, False)
    assert not float_requant_exact(q31, 1)
    # at the edge: odd values just below 2^24 / 8, times 8, stay exact in float32
    x = np.array([edge, -edge, edge - 1, 1 - edge], np.int64)
    np.testing.assert_array_equal(float_requant(x.astype(np.float32), times8, edge).astype(np.int64),
                                  apply_requant(x, times8))
    # 16-bit activations times 2^10 leave float32: the requantize node takes the int64 path
    from edgekit.ops.requantize import Requantize

    rq = Requant((1 << 10,), (0,), 0, -(1 << 31), (1 << 31) - 1, True)
    x_t = tensor("x", (5,), bits=16, zp=3)
    graph, node = one_node_graph("requantize", {"requant": rq}, x_t, tensor("y", (5,), bits=32), {})
    x = np.array([[-32768, 32767, 32765, 1, 0]])
    np.testing.assert_array_equal(Requantize().simulate(node, [x], graph)[0], (x - 3) * 1024)
    assert not float_requant_exact(rq, 32771)
    rq = Requant((1,), (4,), 1, -128, 127, True)  # a shift: float32
    graph, node = one_node_graph("requantize", {"requant": rq}, x_t, tensor("y", (5,), bits=8), {})
    np.testing.assert_array_equal(Requantize().simulate(node, [x], graph)[0], apply_requant(x - 3, rq))


def test_float32_activations_equal_the_int64_path(monkeypatch):
    """Convolutions, requantizations, residual adds and dense layers hand float32 codes on to the
    kernels that take them; the whole graph's tensors equal the int64 GEMM path's, as int64."""
    import edgekit.ops.conv2d as conv2d
    from edgekit.ir.operators import operators

    rng = np.random.default_rng(21)
    shift = lambda s, zp, lo, hi: Requant((1,), (s,), zp, lo, hi, True)  # noqa: E731
    wide = (-(1 << 31), (1 << 31) - 1)
    conv = {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1], "pad": [1, 1, 1, 1], "depthwise": False,
            "depth_multiplier": 1}
    tensors = {"x": tensor("x", (8, 8, 3), zp=2), "a": tensor("a", (8, 8, 8)), "q": tensor("q", (8, 8, 8), zp=3),
               "r": tensor("r", (8, 8, 8), signed=False), "p": tensor("p", (4, 4, 8), signed=False),
               "y": tensor("y", (5,), zp=-1)}
    consts = {"w1": rng.integers(-128, 128, (8, 3, 3, 3)), "b1": rng.integers(-999, 999, 8),
              "w2": rng.integers(-128, 128, (8, 3, 3, 8)), "b2": rng.integers(-999, 999, 8),
              "w3": rng.integers(-128, 128, (5, 128)), "b3": rng.integers(-999, 999, 5)}
    for name, arr in consts.items():
        tensors[name] = tensor(name, arr.shape, bits=32, const=True)
    residual = {"in_requant": [shift(0, 0, *wide), Requant((4,), (0,), 0, *wide, True)], "requant": shift(1, 0, 0, 255)}
    nodes = [Node("c1", "conv2d", ["x", "w1", "b1"], ["a"], {**conv, "requant": shift(9, 0, -128, 127)}),
             Node("rq", "requantize", ["a"], ["q"], {"requant": shift(1, 3, -128, 127)}),
             Node("c2", "conv2d", ["q", "w2", "b2", "a"], ["r"], {**conv, "requant": shift(11, 0, -128, 127),
                                                                  "residual": residual}),
             Node("mp", "maxpool", ["r"], ["p"], {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]}),
             Node("fc", "dense", ["p", "w3", "b3"], ["y"], {"requant": shift(10, -1, -128, 127)})]
    graph = Graph(tensors, nodes, ["x"], ["y"], consts, InputQuant((8, 8, 3), 1.0, 2, -128, 127, 8, True))
    x = rng.integers(-128, 128, (40, 8, 8, 3))
    fast = simulate(graph, x, keep_all=True)
    assert all(arr.dtype == np.int64 for name, arr in fast.items() if name not in consts)
    for op in operators().values():
        monkeypatch.setattr(op, "float32_inputs", False)
    monkeypatch.setattr(conv2d, "float32_conv", lambda *args: None)
    slow = simulate(graph, x, keep_all=True)
    for name in tensors:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    assert len(np.unique(fast["y"])) > 20  # the values move: not a constant
