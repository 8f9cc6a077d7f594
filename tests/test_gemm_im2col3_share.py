"""The GEMM's estimate of its im2col of 3 pixels at once (ek_im2col3): the share of blocks it takes decides
whether the call pays (kernels/conv2d_gemm.py im2col3_share, im2col3_pays)."""
from __future__ import annotations

from edgekit.backends.cortexm.kernels.conv2d_gemm import im2col3_pays, im2col3_share


def _taken_by_c(oh, ow, iw, kw, sw, pad_l):
    # ek_im2col3's refusal test (templates/cortexm/ops_dsp/dsp_common.c.j2), block by block
    npix, taken, blocks = oh * ow, 0, 0
    for p0 in range(0, npix, 3):
        blocks += 1
        ox = p0 - (p0 // ow) * ow
        ix = ox * sw - pad_l
        taken += not (p0 + 3 > npix or ox + 3 > ow or ix < 0 or ix + 2 * sw + kw > iw)
    return taken / blocks


def test_share_equals_the_c_refusal_test():
    for shape in ((8, 8, 8, 3, 1, 1), (25, 5, 5, 1, 1, 0), (16, 16, 32, 3, 2, 0), (32, 32, 32, 3, 1, 1), (3, 3, 3, 1, 1, 0),
                  (6, 6, 12, 3, 2, 1)):
        assert im2col3_share(*shape) == _taken_by_c(*shape), shape
    # 8x8 maps, 3x3 taps, padding 1: blocks at either column edge or across a row are refused, 11 of 22 taken
    assert im2col3_share(8, 8, 8, 3, 1, 1) == 0.5


def test_refused_blocks_weigh_against_the_call():
    # KWS's 1x1 layers on a 5-pixel-wide map: 2 blocks in 5 straddle a row, the call no longer pays
    share = im2col3_share(25, 5, 5, 1, 1, 0)
    assert im2col3_pays(1, 1, 64) and not im2col3_pays(1, 1, 64, share)
    # ResNet-8's 3x3 layers keep it, also on 8x8 maps
    for ow, ic in ((32, 16), (16, 32), (8, 64)):
        assert im2col3_pays(3, 3, ic, im2col3_share(ow, ow, ow, 3, 1, 1)), ow
