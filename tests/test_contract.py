"""The integer contract: Python reference vs exact rational arithmetic, and the C header vs Python."""
from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ContractError
from edgekit.ir import contract
from edgekit.resources import resource_dir


def exact_round_half_even(num: int, den: int) -> int:
    """round(num/den) with ties to even, in exact integer arithmetic."""
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        q += 1
    return q


def test_rshift_rne_matches_exact_rounding(rng):
    x = np.concatenate([rng.integers(-2**31, 2**31, 2000), np.arange(-40, 41)])
    for s in range(0, 32):
        got = contract.rshift_rne(x, s)
        want = [exact_round_half_even(int(v), 2**s) for v in x]
        assert got.tolist() == want, f"shift {s}"


def test_rshift_rne_ties_go_to_even():
    # 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 1.5 -> 2, -0.5 -> 0
    x = np.array([5, 7, -5, -7, 3, -1])
    assert contract.rshift_rne(x, 1).tolist() == [2, 4, -2, -4, 2, 0]


def test_quantize_equals_qonnx_quant(rng):
    from qonnx.custom_op.general.quant import quant as qonnx_quant

    x = np.concatenate([rng.normal(0, 3, 5000), (np.arange(-300, 300) + 0.5) / 32]).astype(np.float32)
    for scale, zp, bits, signed, narrow in [(2**-5, 0, 8, True, False), (2**-3, 0, 4, True, True),
                                           (0.0371, 0, 8, True, False), (0.02, 7, 8, False, False)]:
        want = qonnx_quant(x, np.float32(scale), np.float32(zp), np.float32(bits), signed, narrow, "ROUND")
        lo, hi = contract.quant_range(bits, signed, narrow)
        got = (contract.quantize(x, scale, zp, lo, hi) - zp) * np.float32(scale)
        np.testing.assert_array_equal(got.astype(np.float32), want)


@pytest.mark.parametrize("ratio", [2.0**-7, 2.0**-1, 1.0, 4.0, 0.003712, 0.5123, 1.7, 2.0**-40])
def test_requant_is_exact_or_within_half_lsb(ratio, rng):
    rq = contract.make_requant(np.array([ratio]), 0, -(2**31), 2**31 - 1)
    acc = rng.integers(-2**24, 2**24, 3000)
    got = contract.apply_requant(acc, rq)
    frac = Fraction(ratio)
    want = np.array([exact_round_half_even((int(a) * frac).numerator, (int(a) * frac).denominator) for a in acc])
    if contract.is_power_of_two(ratio):
        assert rq.exact and np.array_equal(got, want)
    else:  # Q31 multiplier: off by at most one code, and only near ties
        assert not rq.exact and np.abs(got - want).max() <= 1


def test_requant_collapses_identical_channels():
    rq = contract.make_requant(np.full(8, 2.0**-6), 0, -128, 127)
    assert rq.multiplier == (1,) and rq.shift == (6,) and rq.pure_shift


def test_accumulator_check_names_node():
    w = np.full((2, 200_000), 127)
    bound = contract.accumulator_bound(w, np.zeros(2, np.int64), -128, 127)
    with pytest.raises(ContractError, match="node 'fc9'.*overflow"):
        contract.check_accumulator("node 'fc9'", bound)
    assert contract.check_accumulator("ok", contract.accumulator_bound(w[:, :10], np.zeros(2), -128, 127)) <= 32


def test_storage_dtype_refuses_wide_activations():
    assert contract.storage_dtype(8, True, "t") == "int8"
    assert contract.storage_dtype(5, False, "t") == "uint8"
    with pytest.raises(ContractError, match="Quant_7.*24-bit"):
        contract.storage_dtype(24, False, "Quant_7")


C_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "ek_contract.h"
/* reads lines "x m s", prints rshift32 (or -) and mul_rshift64 results */
int main(void)
{
    long long x, m, s;
    while (scanf("%lld %lld %lld", &x, &m, &s) == 3) {
        if (m == 1 && s >= 1 && s <= 31) {
            printf("%ld ", (long)ek_rshift_rne32((int32_t)x, (int32_t)s));
        } else {
            printf("- ");
        }
        printf("%lld\n", (long long)ek_mul_rshift_rne64((int32_t)x, (int32_t)m, (int32_t)s));
    }
    return 0;
}
"""


def test_c_contract_equals_python(tmp_path: Path, rng):
    """ek_contract.h computes exactly what contract.py computes (host gcc, -Werror)."""
    (tmp_path / "drv.c").write_text(C_DRIVER)
    exe = tmp_path / "drv"
    inc = resource_dir("templates") / "cortexm"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{inc}", str(tmp_path / "drv.c"),
                    "-o", str(exe)], check=True)
    rows = []
    for _ in range(4000):
        x = int(rng.integers(-2**31, 2**31))
        if rng.random() < 0.5:
            m, s = 1, int(rng.integers(1, 32))
        else:
            m, s = int(rng.integers(2**30, 2**31)), int(rng.integers(0, 63))
        rows.append((x, m, s))
    rows += [(x, 1, s) for x in (-5, -3, -1, 1, 3, 5, 2**31 - 1, -2**31) for s in (1, 2, 31)]
    out = subprocess.run([str(exe)], input="\n".join(f"{x} {m} {s}" for x, m, s in rows), capture_output=True,
                         text=True, check=True).stdout.split("\n")
    for (x, m, s), line in zip(rows, out):
        r32, r64 = line.split()
        want = int(contract.rshift_rne(np.int64(x) * m, s))
        assert int(r64) == want, (x, m, s)
        if r32 != "-":
            assert int(r32) == want, (x, m, s)


# ---------------------------------------------------------------------------------------
# TFLite's arithmetic moved here from the front end and the DSP kernels
# ---------------------------------------------------------------------------------------
def test_one_multiply_form_equals_double_rounding(rng):
    """contract.fast_double_rounding's constants with contract.dsp_rq (ek_dsp_rq's arithmetic) give
    TFLite's double rounding plus the zero point, for every kind of int32 accumulator and the ties."""
    accs = np.concatenate([rng.integers(-2**31, 2**31, 3000), rng.integers(-3000, 3000, 3000),
                           np.array([-2**31, 2**31 - 1, -1, 0, 1])])
    for trial in range(60):
        m = int(rng.integers(2**30, 2**31)) if trial % 3 else 2**30 + (trial % 2) * 2**29  # ties
        s = int(rng.integers(33, 56))
        zp = int(rng.integers(-128, 128))
        rq = contract.Requant((m,), (s,), zp, -2**31, 2**31 - 1, False, "double")
        f = contract.fast_double_rounding(rq)
        assert f is not None
        want = contract.mul_dbl(accs, m, s) + zp
        assert np.array_equal(contract.dsp_rq(accs, f["m"][0], f["ahi"][0], f["sh"][0]), want)
        # ties: accumulators that put acc * m exactly on a rounding boundary
        e = s - 31
        ties = [(int(k) * 2**(31 + e) - 2**30 - 2**(30 + e)) // m for k in rng.integers(-2**20, 2**20, 300)]
        ties = np.array([t + d for t in ties for d in (-1, 0, 1) if -2**31 <= t + d < 2**31], dtype=np.int64)
        got = contract.dsp_rq(ties, f["m"][0], f["ahi"][0], f["sh"][0])
        assert np.array_equal(got, contract.mul_dbl(ties, m, s) + zp)


ROUND_DRIVER = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
/* reads lines "f|d <hex float>", prints std::round of the float32 (roundf) or double (round) */
int main(void)
{
    char kind;
    char text[64];
    while (scanf(" %c %63s", &kind, text) == 2) {
        printf("%.0f\n", kind == 'f' ? (double)roundf(strtof(text, NULL)) : round(strtod(text, NULL)));
    }
    return 0;
}
"""


def _ties_and_neighbours(dtype) -> np.ndarray:
    halves = (np.arange(-70, 70) + 0.5).astype(dtype)
    big = np.array([2.0**23 - 0.5, 2.0**23 + 1, 2.0**52 - 0.5, 2.0**53, 2.0**62], np.float64).astype(dtype)
    points = np.concatenate([halves, big, -big, np.array([0.0, -0.0], dtype)])
    up, down = np.nextafter(points, dtype(np.inf)), np.nextafter(points, dtype(-np.inf))
    return np.concatenate([points, up, down])


def test_round_half_away_equals_c_round(tmp_path: Path, rng):
    """contract.round_half_away is C's round()/roundf() (TfLiteRound) for float32 and float64:
    ties at every half, their float neighbours, 0.49999999999999994, signed zeros and large values."""
    (tmp_path / "round.c").write_text(ROUND_DRIVER)
    exe = tmp_path / "round"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", str(tmp_path / "round.c"),
                    "-o", str(exe), "-lm"], check=True)
    for dtype, kind in ((np.float32, "f"), (np.float64, "d")):
        x = np.concatenate([_ties_and_neighbours(dtype), rng.normal(0, 40, 3000).astype(dtype),
                            (rng.integers(-2**20, 2**20, 2000) / 2**rng.integers(0, 12, 2000)).astype(dtype),
                            np.array([0.49999999999999994, -0.49999999999999994]).astype(dtype)])
        lines = "\n".join(f"{kind} {float(v).hex()}" for v in x)
        out = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True).stdout.split()
        want = np.array([int(float(v)) for v in out], dtype=np.int64)
        got = contract.round_half_away(x)
        assert got.dtype == np.int64 and np.array_equal(got, want), x[got != want][:5]
        assert [contract.round_half_away(v) for v in x[:300]] == want[:300].tolist()  # scalars: Python ints


def test_dequantized_outputs_map_back_to_their_codes(rng):
    """contract.dequantized_to_codes inverts float32 dequantization exactly, per tensor and per channel."""
    for _ in range(50):
        zp = int(rng.integers(-128, 128))
        scale = rng.uniform(1e-4, 4.0, int(rng.choice([1, 7]))).astype(np.float32)
        q = rng.integers(-128, 128, (40, scale.size))
        y = ((q - zp) * scale).astype(np.float32)  # what qonnx / TFLite's DEQUANTIZE hand back
        assert np.array_equal(contract.dequantized_to_codes(y, scale, zp), q)
    assert np.isnan(contract.dequantized_to_codes(np.array([np.nan]), 0.5, 3)).all()


def test_accumulator_bound_holds_every_partial_sum(rng):
    """The bound is at least |every partial sum| in every order, and is reached (x at its extremes)."""
    for _ in range(200):
        n = int(rng.integers(1, 6))
        w = rng.integers(-127, 128, (3, n))
        bias = rng.integers(-5000, 5000, 3)
        lo = int(rng.integers(-255, 1))
        hi = int(rng.integers(lo, 256))
        bound = contract.accumulator_bound(w, bias, lo, hi)
        xs = np.array(np.meshgrid(*[[lo, hi]] * n)).reshape(n, -1).T  # every corner of the input box
        partial = bias[:, None, None] + np.cumsum(w[:, None, :] * xs[None, :, :], axis=2)
        worst = np.maximum(np.abs(partial).max(axis=(1, 2)), np.abs(bias))
        assert np.all(bound >= worst)
        if lo == -hi:  # the extremes of x reach the bound with the signs of w and the bias
            assert np.array_equal(bound, np.abs(bias) + np.abs(w).sum(axis=1) * hi)


def test_gemmlowp_exp_follows_exp(rng):
    """contract.exp_on_negative_values (Q5.26 in, Q0.31 out) against exp() over its whole range:
    within 2^-21 (gemmlowp's Taylor series and barrel of constants), exactly 1.0 at 0, monotone."""
    a = np.unique(np.concatenate([rng.integers(-(32 << 26), 1, 4000), -np.arange(0, 5000) * (1 << 18),
                                  np.array([0, -1, -(1 << 24), -(1 << 26), -(31 << 26)])]))
    got = np.array([contract.exp_on_negative_values(int(v)) for v in a], dtype=np.float64)
    assert contract.exp_on_negative_values(0) == contract.INT32_MAX
    assert np.abs(got / 2**31 - np.exp(a / 2**26)).max() < 2**-21
    assert np.all(np.diff(got) >= 0)


DSP_RQ_FIRMWARE = r"""
#include <stdint.h>
#include "semihosting.h"

%(ek_dsp_rq)s

/* cases.bin: int32 quadruples (acc, m, ahi, sh); results.bin: ek_dsp_rq of each */
int main(void)
{
    static int32_t cases[4 * 256];
    static int32_t results[256];
    const int32_t in = sh_open("cases.bin", SH_MODE_RB);
    const int32_t out = sh_open("results.bin", SH_MODE_WB);
    if (in < 0 || out < 0) {
        return 2;
    }
    int32_t left = sh_flen(in) / 16;
    while (left > 0) {
        const int32_t n = left < 256 ? left : 256;
        if (sh_read(in, cases, (uint32_t)n * 16u) != 0) {
            return 3;
        }
        for (int32_t i = 0; i < n; ++i) {
            results[i] = ek_dsp_rq(cases[4 * i], cases[4 * i + 1], cases[4 * i + 2], cases[4 * i + 3]);
        }
        if (sh_write(out, results, (uint32_t)n * 4u) != 0) {
            return 4;
        }
        left -= n;
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
"""


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m55"])
def test_c_dsp_rq_equals_python_on_the_emulated_core(core, tmp_path: Path, rng):
    """ek_dsp_rq (inline assembly, templates/cortexm/ops_dsp/dsp_common.c.j2) run on QEMU computes
    contract.dsp_rq, hence TFLite's double rounding, for the constants of fast_double_rounding."""
    import re

    from edgekit.backends.cortexm import toolchain as tc
    from edgekit.errors import ToolchainError
    from edgekit.targets import emulated_boards, get_board, get_core

    try:
        tc.arm_gcc(), tc.qemu()
    except ToolchainError as e:
        pytest.skip(str(e))
    source = (resource_dir("templates") / "cortexm" / "ops_dsp" / "dsp_common.c.j2").read_text()
    (function,) = re.findall(r"static inline int32_t ek_dsp_rq\(.*?\n}\n", source, re.S)
    fw = tmp_path / "firmware"
    tc.copy_firmware_sources(fw)
    (fw / "dsp_rq.c").write_text(DSP_RQ_FIRMWARE % {"ek_dsp_rq": function})
    c, board = get_core(core), get_board(emulated_boards(core)[0])
    objects = []
    for name in ("dsp_rq.c", "startup_cortexm.c", "semihosting.c", "libc_min.c"):
        obj = tmp_path / f"{name}.o"
        subprocess.run([tc.arm_gcc(), *c.cflags, *tc.WARNINGS, *tc.FIRMWARE_CFLAGS, f"-I{fw}", "-c", str(fw / name),
                        "-o", str(obj)], check=True)
        objects.append(obj)
    elf = tc.link_firmware(tmp_path, c, objects, tc.render_linker_script(c, board, tmp_path / "link.ld"))

    cases, want = [], []
    accs = np.concatenate([rng.integers(-2**31, 2**31, 400), rng.integers(-3000, 3000, 200),
                           np.array([-2**31, 2**31 - 1, -1, 0, 1])])
    for trial in range(24):
        m = int(rng.integers(2**30, 2**31)) if trial % 3 else 2**30 + (trial % 2) * 2**29
        s, zp = int(rng.integers(33, 62)), int(rng.integers(-128, 128))
        f = contract.fast_double_rounding(contract.Requant((m,), (s,), zp, -2**31, 2**31 - 1, False, "double"))
        if f is None:
            continue
        e = s - 31
        ties = np.array([(int(k) * 2**(31 + e) - 2**30 - 2**(30 + e)) // m + d
                         for k in rng.integers(-2**12, 2**12, 60) for d in (-1, 0, 1)], dtype=np.int64)
        a = np.concatenate([accs, ties[(ties >= -2**31) & (ties < 2**31)]])
        cases.append(np.stack([a, np.full_like(a, f["m"][0]), np.full_like(a, f["ahi"][0]),
                               np.full_like(a, f["sh"][0])], axis=1))
        want.append(contract.mul_dbl(a, m, s) + zp)
        assert np.array_equal(contract.dsp_rq(a, f["m"][0], f["ahi"][0], f["sh"][0]), want[-1])
    cases_arr, want_arr = np.concatenate(cases), np.concatenate(want)
    (tmp_path / "cases.bin").write_bytes(cases_arr.astype("<i4").tobytes())
    tc.run_qemu(elf, board.qemu_machine, tmp_path)
    got = np.frombuffer((tmp_path / "results.bin").read_bytes(), "<i4").astype(np.int64)
    assert len(got) == len(want_arr) > 10000
    assert np.array_equal(got, want_arr), cases_arr[got != want_arr][:5]


def test_tflite_input_quantizer_saturates_far_outside_the_range():
    """Values past the code range, up to +-inf, land on qmin/qmax (an int cast of them would wrap:
    found by edgekit fuzz with inputs of +-1e30 times the input span); in-range codes keep TFLite's
    rounding (half away from zero, zero point after rounding)."""
    x = np.array([1e30, -1e30, np.inf, -np.inf, 3e38, -3e38, 1e9, -1e9], np.float32)
    assert contract.quantize_tflite(x, 0.5, -3, -128, 127).tolist() == [127, -128] * 4
    assert contract.quantize_tflite(np.array([0.25, -0.25, 63.0, 63.5, -62.5]), 0.5, -3, -128, 127).tolist() == \
        [-2, -4, 123, 124, -128]
