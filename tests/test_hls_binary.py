"""Binary networks through the FPGA backend with hls4ml's own binary support (XNOR types).

FINN TFC-style MLPs made with Brevitas (1-bit weights with 1-bit and with 2-bit activations) build
from edgekit's integer IR (edgekit/backends/hls/integer_path.py): binary weights become hls4ml's
``XnorPrecisionType`` (``ap_uint<1>``, bit b = 2b - 1), a binary activation the same type, so hls4ml's
Dense computes XNOR and popcount (``both_binary``) or +-x (``weight_binary``) instead of
multiplications; its C-simulation must equal the simulator bit for bit.
"""
from __future__ import annotations

import re
import shutil

import pytest

from edgekit.api import build, verify

from test_binary_kernels import tfc

hls4ml = pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C-simulation needs g++")


@pytest.mark.parametrize("act_bits, products", [(1, ["weight_binary", "both_binary", "both_binary"]),
                                                (2, ["weight_binary", "weight_binary", "weight_binary"])])
def test_tfc_binary_mlp_uses_xnor_types_and_csim_is_exact(act_bits, products, tmp_path):
    model = tfc(tmp_path / f"tfc_w1a{act_bits}.onnx", act_bits, n_in=32, hidden=(32, 32), n_out=10)
    out = tmp_path / "b"
    m = build(model, "fpga", "pynq-z2", out).manifest
    layers = m.precision["layers"]
    assert [lp["product"].split(" ")[0] for lp in layers] == products, layers
    assert all(lp["weight"] == "xnor<1>" for lp in layers), layers
    params = (out / "hls" / "firmware" / "parameters.h").read_text()
    assert sorted(re.findall(r"product::(\w+)<", params)) == sorted(products), params
    defines = (out / "hls" / "firmware" / "defines.h").read_text()
    weight_types = re.findall(r"typedef (\S+) weight\d+_t;", defines)
    assert weight_types == ["ap_uint<1>"] * 3, defines  # one bit per weight, no int8 multipliers
    est = (out / "estimates.json").read_text()
    assert '"weight_bits": 1' in est and '"dsp": 0' in est
    rep = verify(out, count=48, seed=3)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    csim = stages["hls4ml"]
    assert csim.must_be_exact and csim.elements == 48 * 10 and csim.mismatches == 0, rep.table()
    assert stages["qonnx"].must_be_exact and stages["qonnx"].mismatches == 0, rep.table()
    assert rep.ok, rep.table()
