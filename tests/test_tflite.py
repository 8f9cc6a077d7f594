"""TFLite import: the double-rounding contract, the TFLite operators and the MLPerf Tiny models.

The MLPerf Tiny int8 models and their TFLite Micro goldens are read from
``../shared/peers/mlperf_tiny`` (beside the repository); the tests that need them skip
when it is absent. Every comparison is element for element, so a 1-LSB difference fails.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.ir import contract
from edgekit.resources import resource_dir

PEERS = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "mlperf_tiny"


# ---------------------------------------------------------------------------------------
# The double-rounding contract: Python vs literal gemmlowp formulas vs C
# ---------------------------------------------------------------------------------------
def _c_trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, literally (exact Python integers)."""
    if a == b == -2**31:
        return 2**31 - 1
    ab = a * b
    return _c_trunc_div(ab + (2**30 if ab >= 0 else 1 - 2**30), 2**31)


def ref_rdbp(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT, literally."""
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def ref_mbqm(x: int, m: int, tfl_shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier (double rounding), literally; TFLite's shift sign."""
    left, right = max(tfl_shift, 0), max(-tfl_shift, 0)
    shifted = ((x * (1 << left) + 2**31) % 2**32) - 2**31
    return ref_rdbp(ref_srdhm(shifted, m), right)


def _operands(rng, n=4000):
    rows = []
    for _ in range(n):
        x = int(rng.integers(-2**31, 2**31)) if rng.random() < 0.5 else int(rng.integers(-2**20, 2**20))
        m = int(rng.integers(2**30, 2**31))
        s = int(rng.integers(31, 63)) if rng.random() < 0.8 else int(rng.integers(0, 31))
        if s < 31:  # keep x * 2^(31 - s) inside int32, as the lowering guarantees
            x = x >> (31 - s)
        rows.append((x, m, s, 0))
    # TFLite ADD: 20-bit input shift, then multipliers below one
    rows += [(int(v), int(rng.integers(2**30, 2**31)), int(rng.integers(31, 40)), 20)
             for v in rng.integers(-255, 256, 500)]
    # ties of the final right shift: x * m / 2^31 lands exactly on .5 (m = 2^30 halves x)
    rows += [(x, 2**30, s, 0) for x in (-7, -5, -3, -1, 1, 3, 5, 7, 2**31 - 1, -2**31) for s in (31, 32, 33, 62)]
    return rows


def test_double_rounding_matches_gemmlowp_formulas(rng):
    for x, m, s, pre in _operands(rng):
        want = ref_mbqm(x * (1 << pre), m, 31 - s)
        assert int(contract.mul_dbl(np.int64(x), m, s, pre)) == want, (x, m, s, pre)


def test_double_rounding_differs_from_single_rounding():
    """The two rounding modes are different functions: the tests would catch a mix-up."""
    x = np.arange(-20000, 20000)
    m, s = 1518500250, 40  # ~ 2^-9 * 1.414
    single = contract.rshift_rne(x * m, s)
    double = contract.mul_dbl(x, m, s)
    assert 0 < np.count_nonzero(single != double) and np.abs(single - double).max() == 1
    # -0.5 rounds away from zero in RoundingDivideByPOT, to even in half-even mode
    assert int(contract.mul_dbl(np.int64(-2), 2**30, 32)) == -1 and int(contract.rshift_rne(-2 * 2**30, 32)) == 0


def test_quantize_multiplier_matches_tflite():
    # frexp mantissa rounded half away from zero; 2^31 renormalised; tiny ratios flush to 0
    assert contract.quantize_multiplier_tflite(0.5) == (2**30, 31)
    assert contract.quantize_multiplier_tflite(1.0) == (2**30, 30)
    assert contract.quantize_multiplier_tflite(1 - 2**-40) == (2**30, 30)  # mantissa rounds up to 2^31
    assert contract.quantize_multiplier_tflite(2.0**-40) == (0, 31)
    assert contract.quantize_multiplier_tflite(0.0) == (0, 31)
    tie = 0.5 + 2**-32  # mantissa * 2^31 = 2^30 + 0.5 exactly: away from zero (half to even would give 2^30)
    assert contract.quantize_multiplier_tflite(tie) == (2**30 + 1, 31)
    m, s = contract.quantize_multiplier_tflite(0.0037)
    assert 2**30 <= m < 2**31 and abs(m * 2.0**-s / 0.0037 - 1) < 2**-30


C_DRIVER = r"""
#include <stdio.h>
#include "ek_contract.h"
/* reads "x m s pre" lines, prints ek_mul_dbl, ek_srdhm(x, m), ek_rdbp(x, s % 32) */
int main(void)
{
    long long x, m, s, pre;
    while (scanf("%lld %lld %lld %lld", &x, &m, &s, &pre) == 4) {
        printf("%ld %ld %ld\n", (long)ek_mul_dbl((int32_t)x, (int32_t)m, (int32_t)s, (int32_t)pre),
               (long)ek_srdhm((int32_t)x, (int32_t)m), (long)ek_rdbp((int32_t)x, (int32_t)(s % 32)));
    }
    return 0;
}
"""

RECIP_DRIVER = r"""
#include <stdio.h>
#include "ek_contract.h"
int main(void)
{
    long long x;
    while (scanf("%lld", &x) == 1) {
        int32_t bits;
        const int32_t r = ek_tfl_reciprocal((int32_t)x, &bits);
        printf("%ld %ld %ld\n", (long)r, (long)bits, (long)ek_div_away((int32_t)x % 5000 - 2500, 1 + (int32_t)(x % 7)));
    }
    return 0;
}
"""


def _compile(tmp_path: Path, src: str, name: str) -> Path:
    (tmp_path / f"{name}.c").write_text(src)
    exe = tmp_path / name
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    f"-I{resource_dir('templates') / 'cortexm'}", str(tmp_path / f"{name}.c"), "-o", str(exe)],
                   check=True)
    return exe


def test_c_double_rounding_equals_python(tmp_path: Path, rng):
    """ek_mul_dbl / ek_srdhm / ek_rdbp compute exactly what contract.py computes."""
    exe = _compile(tmp_path, C_DRIVER, "drv")
    rows = _operands(rng)
    rows += [(int(a), int(b), int(rng.integers(31, 63)), 0) for a, b in rng.integers(-2**31, 2**31, (2000, 2))]
    rows += [(-2**31, -2**31, 40, 0), (-2**31, 2**31 - 1, 31, 0), (2**31 - 1, 2**31 - 1, 62, 0)]
    out = subprocess.run([str(exe)], input="\n".join(" ".join(map(str, r)) for r in rows), capture_output=True,
                         text=True, check=True).stdout.split("\n")
    for (x, m, s, pre), line in zip(rows, out):
        got = [int(v) for v in line.split()]
        assert got[1] == ref_srdhm(x, m) == int(contract.srdhm(np.int64(x), np.int64(m))), (x, m)
        assert got[2] == ref_rdbp(x, s % 32) == int(contract.rdbp(np.int64(x), s % 32)), (x, s)
        if s < 31 and abs(x) >= 2**s:  # shifted out of int32: not an input the lowering produces
            continue
        assert got[0] == int(contract.mul_dbl(np.int64(x), m, s, pre)), (x, m, s, pre)


def test_c_softmax_reciprocal_equals_python(tmp_path: Path, rng):
    exe = _compile(tmp_path, RECIP_DRIVER, "recip")
    xs = np.concatenate([rng.integers(2**19, 2**31, 3000), [2**19, 2**19 + 1, 2**20, 2**31 - 1, 2**30, 3 << 28]])
    out = subprocess.run([str(exe)], input="\n".join(map(str, xs)), capture_output=True, text=True,
                         check=True).stdout.split("\n")
    r, bits = contract.tflite_reciprocal(xs)
    n = (xs % 5000 - 2500)
    d = 1 + xs % 7
    away = contract.div_round(n, d, "AWAY")
    for i, line in enumerate(out[:len(xs)]):
        assert [int(v) for v in line.split()] == [int(r[i]), int(bits[i]), int(away[i])], xs[i]
    # 1 / (1 + f) is close to the real reciprocal
    f = (xs / 2.0 ** np.floor(np.log2(xs))) - 1
    np.testing.assert_allclose(r / 2**31, 1 / (1 + f), atol=2e-9)
