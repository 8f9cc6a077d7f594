"""What the packed-weight kernels (``conv2d_gemm_packed``, ``dense_packed``; Helium: ``mve_gemm_packed``,
``mve_dense_packed``) share: the layout of 4- and 2-bit weights in a byte and the few instructions that
unpack it.

A byte holds 8 / bits *sets*; set s sits in bits [8 - (s + 1) * bits, 8 - s * bits) (set 0 in the top
bits), and a 32-bit word holds four such bytes. Two ways to read them:

* the GEMM (``conv2d_gemm_packed``: a set is a k-pair step): ``(word << s * bits) & MASK`` leaves set s
  alone at the top of each byte, that is 2^(8 - bits) times the weight as a signed byte, and SXTB16 /
  SXTB16 ROR #8 widen bytes 0/2 and 1/3 to the int16 halves SMLAD multiplies. The products are ``SCALE =
  2^(8 - bits)`` times the true ones: the kernel accumulates the scaled sum and shifts it back exactly (an
  arithmetic shift of a multiple of SCALE), so the accumulator bound times SCALE must fit in int32
  (:func:`scaled_bound_refusal`);
* the dense kernels (a set is a row): the lower sets in offset binary (``set_bytes(offset=True)``), so the
  byte itself and the byte AND :func:`low_mask` are exact sums of scaled codes, and the rows follow from
  the sums of their products (kernels/dense_packed.py).
"""
from __future__ import annotations

import numpy as np

from ....ir.packing import packed_bits

#: packed storage widths these kernels read
BITS = (4, 2)


def mask(bits: int) -> int:
    """The top ``bits`` of every byte (a Thumb-2 modified immediate: 0xF0F0F0F0, 0xC0C0C0C0)."""
    top = (0xFF << (8 - bits)) & 0xFF
    return top * 0x01010101


def low_mask(bits: int, s: int) -> int:
    """The bits below set s's top in every byte (0x0F0F0F0F; 0x3F3F3F3F, 0x0F0F0F0F, 0x03030303): with the
    lower sets in offset binary, SXTB16 of ``word & low_mask`` is a non-negative sum of scaled offset codes."""
    return (0xFF >> (s * bits)) * 0x01010101


def offset_of(bits: int) -> int:
    """What offset binary adds to a code of the lower sets (dense_packed)."""
    return 2 ** (bits - 1)


def scale_log2(bits: int) -> int:
    """log2 of the factor by which the unpacked weights exceed the true ones."""
    return 8 - bits


def sets_per_word(bits: int) -> int:
    return 8 // bits


def set_bytes(codes: np.ndarray, bits: int, offset: bool = False) -> np.ndarray:
    """Bytes (0..255) from ``codes`` (..., 8 // bits): code s in bits [8 - (s + 1) bits, 8 - s bits), as two's
    complement codes of ``bits`` bits; with ``offset`` the codes below the top one as offset binary
    (code + 2^(bits - 1), 0 .. 2^bits - 1: :func:`low_mask`)."""
    codes = np.asarray(codes, np.int64)
    n = sets_per_word(bits)
    assert codes.shape[-1] == n, codes.shape
    field = (1 << bits) - 1
    b = np.zeros(codes.shape[:-1], np.int64)
    for s in range(n):
        c = codes[..., s] + (offset_of(bits) if offset and s else 0)
        b |= (c & field) << (8 - (s + 1) * bits)
    return b


def set_words(sets: np.ndarray, bits: int, offset: bool = False) -> np.ndarray:
    """int32 words from ``sets`` (..., 8 // bits, 4): byte k of a word holds the sets' codes k (:func:`set_bytes`)."""
    sets = np.asarray(sets, np.int64)
    assert sets.shape[-2:] == (sets_per_word(bits), 4), sets.shape
    b = set_bytes(np.swapaxes(sets, -1, -2), bits, offset)               # (..., 4)
    w = sum(b[..., k] << (8 * k) for k in range(4))
    return np.where(w >= 2**31, w - 2**32, w).astype(np.int64)


def unpack_set(word: int, s: int, bits: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """What the kernels' instructions make of set ``s`` of ``word`` (LSL, AND, SXTB16, SXTB16 ROR #8): the
    int16 halves (byte 0, byte 2) and (byte 1, byte 3), each SCALE times a weight (for the tests)."""
    t = ((word & 0xFFFFFFFF) << (s * bits)) & mask(bits)

    def sbyte(k: int) -> int:
        b = (t >> (8 * k)) & 0xFF
        return b - 256 if b >= 128 else b

    return (sbyte(0), sbyte(2)), (sbyte(1), sbyte(3))


def weight_bits(node, graph) -> int:
    """Storage width of the node's weights (input 1): 2, 4 or 8."""
    return packed_bits(graph.tensors[node.inputs[1]].bits)


def packed_reference_bytes(node, graph) -> int:
    """Flash bytes of the reference kernel's packed copy of the node's weights (codegen's constants)."""
    w = graph.constants[node.inputs[1]]
    return -(-w.size * weight_bits(node, graph) // 8)


def range_refusal(w: np.ndarray, bits: int) -> str | None:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if w.size and (int(w.min()) < lo or int(w.max()) > hi):
        return f"weights outside the signed {bits}-bit range"
    return None


def scaled_bound_refusal(bound: int, bits: int) -> str | None:
    """Why the scaled accumulator could overflow int32 (None: it cannot)."""
    if int(bound) * 2 ** scale_log2(bits) >= 2**31:
        return (f"accumulator bound {int(bound)} times the {2 ** scale_log2(bits)}x scale of unpacked "
                f"{bits}-bit weights exceeds int32")
    return None
