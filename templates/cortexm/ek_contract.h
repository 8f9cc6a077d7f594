/*
 * ek_contract.h - edgekit's integer contract in C (docs/integer-contract.md).
 *
 * Mirrors edgekit/ir/contract.py function for function: every generated kernel
 * rescales and saturates through these helpers, so the C code and the numpy
 * simulator round the same way. Copied unchanged into every build.
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

#endif /* EK_CONTRACT_H */
