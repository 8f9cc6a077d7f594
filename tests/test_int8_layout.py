"""The int8 weight layout of the GEMM-based DSP variants (kernels/conv2d_gemm_int8.py GemmInt8Layout): one
definition for conv2d_gemm_int8 (and its shared-widening form), conv2d_fewch_int8 and conv1x1_add_int8, and
the words it lays out give the micro-kernel's int16 operand pairs through SXTB16 / SXTB16 ROR #8."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.backends.cortexm.kernels import registry as kernel_registry
from edgekit.backends.cortexm.kernels.common import Int8WeightsRefusal
from edgekit.backends.cortexm.kernels.conv2d_gemm_int8 import GemmInt8Layout

INT8_GEMM_VARIANTS = ("conv2d_gemm_int8", "conv2d_gemm_int8_shared", "conv2d_fewch_int8", "conv1x1_add_int8")


def sxtb16(word: np.ndarray, ror: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SXTB16 of the word rotated right by ``ror`` bits: bytes 0 and 2, sign-extended (the ARM semantics)."""
    w = np.asarray(word, np.int64) & 0xFFFFFFFF
    w = ((w >> ror) | (w << (32 - ror))) & 0xFFFFFFFF if ror else w

    def sext(b):
        return np.where(b >= 128, b - 256, b)

    return sext(w & 0xFF), sext((w >> 16) & 0xFF)


@pytest.mark.parametrize("name", INT8_GEMM_VARIANTS)
def test_the_int8_gemm_variants_share_one_layout(name):
    variant = kernel_registry.registry().get(name)
    assert isinstance(variant, GemmInt8Layout) and isinstance(variant, Int8WeightsRefusal)
    assert variant.int8_weights and variant.weight_form == GemmInt8Layout.weight_form
    for method in ("channel_pair_words", "flash_bytes"):  # inherited, not copied or redefined
        assert getattr(type(variant), method) is getattr(GemmInt8Layout, method), method
    # the shared-widening GEMM counts its own saving (one widening per group of blocks), and so does the
    # few-channel one (its weight stream widened in RAM once per call where that is small)
    if name not in ("conv2d_gemm_int8_shared", "conv2d_fewch_int8"):
        assert type(variant).instructions_saved_by_int16 is GemmInt8Layout.instructions_saved_by_int16


def test_channel_pair_words_give_both_channels_pairs_through_sxtb16():
    rng = np.random.default_rng(16)
    for oc_pad, kwords in ((2, 1), (4, 5), (16, 37)):
        wp = rng.integers(-128, 128, size=(oc_pad, kwords, 2))  # channel, k-pair, half
        words = GemmInt8Layout().channel_pair_words(wp)
        assert words.shape == (oc_pad // 2, kwords) and words.min() >= -2**31 and words.max() < 2**31
        lo, hi = sxtb16(words)
        assert (lo == wp[0::2, :, 0]).all() and (hi == wp[0::2, :, 1]).all()  # channel c: (w[a], w[b])
        lo, hi = sxtb16(words, 8)
        assert (lo == wp[1::2, :, 0]).all() and (hi == wp[1::2, :, 1]).all()  # channel c + 1
