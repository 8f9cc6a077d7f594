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
