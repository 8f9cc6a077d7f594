/*
 * ek_contract.h - edgekit's integer contract in C (docs/integer-contract.md).
 *
 * Mirrors edgekit/ir/contract.py function for function: every generated kernel
 * rescales and saturates through these helpers, so the C code and the numpy
 * simulator round the same way. Copied unchanged into every build. (The twin of
 * contract.fast_double_rounding, ek_dsp_rq, is inline assembly and stays with the
 * DSP kernels in ops_dsp/dsp_common.c.j2.)
 */
#ifndef EK_CONTRACT_H
#define EK_CONTRACT_H

#include <stdint.h>

/* Saturate to [lo, hi]. */
static inline int32_t ek_clamp32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static inline int32_t ek_clamp64(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/*
 * x / 2^s rounded to nearest, ties to even (QONNX ROUND), for 1 <= s <= 31.
 * GCC's >> on a negative int is arithmetic (floor); the remainder below 2^s
 * decides whether to round up: above half always, exactly half when the floor is odd.
 */
static inline int32_t ek_rshift_rne32(int32_t x, int32_t s)
{
    const int32_t floor_q = x >> s;
    const uint32_t rem = (uint32_t)x & ((1u << s) - 1u);
    const uint32_t half = 1u << (s - 1);
    return floor_q + (int32_t)((rem > half) | ((rem == half) & ((uint32_t)floor_q & 1u)));
}

/* (x * m) / 2^s in 64 bits with one rounding, ties to even; 0 <= s <= 62. */
static inline int64_t ek_mul_rshift_rne64(int32_t x, int32_t m, int32_t s)
{
    const int64_t p = (int64_t)x * (int64_t)m;
    if (s == 0) {
        return p;
    }
    const int64_t floor_q = p >> s;
    const uint64_t rem = (uint64_t)p & ((UINT64_C(1) << s) - 1u);
    const uint64_t half = UINT64_C(1) << (s - 1);
    return floor_q + (int64_t)((rem > half) | ((rem == half) & ((uint64_t)floor_q & 1u)));
}

/* n / d rounded half to even, d > 0 (pooling: exact division by the window size). */
static inline int32_t ek_div_rne(int32_t n, int32_t d)
{
    int32_t q = n / d;
    int32_t r = n % d; /* C99: q truncates toward zero, r has the sign of n */
    if (r < 0) {
        q -= 1;
        r += d; /* now q = floor(n / d) and 0 <= r < d */
    }
    return q + (int32_t)((2 * r > d) | ((2 * r == d) & (q & 1)));
}

/* floor(n / d), d > 0. */
static inline int32_t ek_div_floor(int32_t n, int32_t d)
{
    const int32_t q = n / d;
    return (n % d < 0) ? q - 1 : q;
}

/* n / d rounded half away from zero, d > 0: TFLite's average pool (truncating division). */
static inline int32_t ek_div_away(int32_t n, int32_t d)
{
    return n > 0 ? (n + d / 2) / d : (n - d / 2) / d;
}

/* ---- TFLite's arithmetic (docs/integer-contract.md section 9; contract.py mul_dbl etc.) ---- */

/*
 * gemmlowp SaturatingRoundingDoublingHighMul: a * b / 2^31 rounded to nearest, ties
 * toward +infinity. gemmlowp writes (a*b + nudge) / 2^31 with a sign-dependent nudge
 * and truncating division; for every 64-bit product that equals floor((a*b + 2^30) / 2^31),
 * an arithmetic shift. INT32_MIN * INT32_MIN saturates.
 */
static inline int32_t ek_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * (int64_t)b + (INT64_C(1) << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero; 0 <= e <= 31. */
static inline int32_t ek_rdbp(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((UINT32_C(1) << e) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> e) + (remainder > threshold);
}

/*
 * TFLite MultiplyByQuantizedMultiplier (double rounding) with edgekit's (M, S), S in [0, 62]:
 * x * 2^(pre + max(31 - S, 0)) as an int32 product, ek_srdhm by M, ek_rdbp by max(S - 31, 0).
 * `pre` is the extra input shift of TFLite's ADD (20), else 0.
 */
static inline int32_t ek_mul_dbl(int32_t x, int32_t m, int32_t s, int32_t pre)
{
    const int32_t left = pre + (s < 31 ? 31 - s : 0);
    const int32_t right = s > 31 ? s - 31 : 0;
    return ek_rdbp(ek_srdhm((int32_t)((uint32_t)x << left), m), right);
}

/* gemmlowp SaturatingRoundingMultiplyByPOT<k>, k > 0: x * 2^k saturated to int32. */
static inline int32_t ek_sat_shl(int32_t x, int32_t k)
{
    const int32_t threshold = (int32_t)((UINT32_C(1) << (31 - k)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << k);
}

/*
 * TFLite GetReciprocal for softmax: x > 0 is a Q12.19 sum of exponentials; returns the
 * Q0.31 value of 1 / (1 + f) (gemmlowp one_over_one_plus_x_for_x_in_0_1, three
 * Newton-Raphson steps) for x normalised to 2^bits * (1 + f), and sets *bits_over_unit.
 */
static inline int32_t ek_tfl_reciprocal(int32_t x, int32_t *bits_over_unit)
{
#if defined(__GNUC__)
    const int32_t clz = __builtin_clz((uint32_t)x);
#else
    int32_t clz = 0;
    while (!(((uint32_t)x << clz) & UINT32_C(0x80000000))) {
        ++clz;
    }
#endif
    *bits_over_unit = 12 - clz;
    const int32_t a = (int32_t)(((uint32_t)x << clz) - UINT32_C(0x80000000));
    const int64_t s = (int64_t)a + INT32_MAX; /* RoundingHalfSum(a, 1.0) */
    const int32_t half_den = (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
    int32_t r = 1515870810 + ek_srdhm(half_den, -1010580540); /* 48/17 - 32/17 d, Q2.29 */
    for (int32_t i = 0; i < 3; ++i) {
        const int32_t one_minus = (INT32_C(1) << 29) - ek_srdhm(half_den, r);
        r = r + ek_sat_shl(ek_srdhm(r, one_minus), 2);
    }
    return ek_sat_shl(r, 1);
}

/*
 * Sub-byte weights packed in flash (edgekit/ir/packing.py): element k of a signed
 * 4-bit array (two per byte) or 2-bit array (four per byte), lowest bits first.
 * Shift the field to the top of a byte, reinterpret as int8, shift back: sign-extended.
 */
static inline int32_t ek_w4(const uint8_t *p, int32_t k)
{
    const uint32_t field = (uint32_t)p[k >> 1] >> ((uint32_t)(k & 1) * 4u);
    return (int32_t)(int8_t)(uint8_t)(field << 4) >> 4;
}

static inline int32_t ek_w2(const uint8_t *p, int32_t k)
{
    const uint32_t field = (uint32_t)p[k >> 2] >> ((uint32_t)(k & 3) * 2u);
    return (int32_t)(int8_t)(uint8_t)(field << 6) >> 6;
}

#endif /* EK_CONTRACT_H */
