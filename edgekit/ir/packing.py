"""Sub-byte weight packing for flash: 4-bit codes two per byte, 2-bit codes four per byte.

Element k sits in byte k / per_byte at bit offset (k % per_byte) * bits, lowest bits
first, as two's complement. C unpacks with ``ek_w4`` / ``ek_w2`` (ek_contract.h).
"""
from __future__ import annotations

import numpy as np

PACKABLE_BITS = (2, 4)


def packed_bits(bits: int) -> int:
    """Storage width for a weight of ``bits`` bits: 2, 4 or 8."""
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    per_byte = 8 // bits
    flat = np.asarray(codes, dtype=np.int64).ravel()
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"codes outside the signed {bits}-bit range")
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, dtype=np.int64)
    padded[:flat.size] = flat & (2**bits - 1)
    lanes = padded.reshape(-1, per_byte) << (np.arange(per_byte) * bits)
    return lanes.sum(axis=1).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    per_byte = 8 // bits
    b = np.asarray(packed, dtype=np.int64)[:, None] >> (np.arange(per_byte) * bits)
    v = (b & (2**bits - 1)).ravel()[:count]
    return np.where(v >= 2 ** (bits - 1), v - 2**bits, v)
