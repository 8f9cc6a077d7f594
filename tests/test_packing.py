"""Sub-byte weight packing: Python pack/unpack round trip, C unpacking equals Python, flash shrinks."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgekit.api import build, verify
from edgekit.ir import packing
from edgekit.resources import resource_dir

from helpers.brevitas_models import export_mlp


@pytest.mark.parametrize("bits", [2, 4])
def test_pack_round_trip(bits, rng):
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=101)
    packed = packing.pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-101 * bits // 8)
    np.testing.assert_array_equal(packing.unpack(packed, bits, 101), codes)
    with pytest.raises(ValueError):
        packing.pack(np.array([2 ** (bits - 1)]), bits)


@pytest.mark.parametrize("bits", [2, 4])
def test_c_unpacking_equals_python(bits, rng, tmp_path):
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=257)
    packed = packing.pack(codes, bits)
    src = tmp_path / "t.c"
    src.write_text(f"""#include <stdio.h>
#include "ek_contract.h"
static const uint8_t p[{packed.size}] = {{{", ".join(map(str, packed))}}};
int main(void) {{ for (int32_t k = 0; k < {codes.size}; ++k) printf("%d\\n", (int)ek_w{bits}(p, k)); return 0; }}
""")
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{resource_dir('templates') / 'cortexm'}",
                    str(src), "-o", str(exe)], check=True)
    got = [int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    assert got == codes.tolist()


def test_packed_weights_shrink_flash_and_stay_exact(tmp_path):
    sizes = {}
    for preset in ("int8-pow2", "w4a8-pow2", "w2a8-pow2"):
        onnx_path = export_mlp(tmp_path / f"{preset}.onnx", preset, input_shape=(64,), hidden=(64,), n_out=8)
        res = build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / preset)
        rep = verify(tmp_path / preset, count=64)
        assert rep.ok and all(s.mismatches == 0 for s in rep.stages), rep.table()
        sizes[preset] = res.manifest.weight_bytes
    weights = 64 * 64 + 64 * 8
    assert sizes["int8-pow2"] - sizes["w4a8-pow2"] == weights // 2
    assert sizes["int8-pow2"] - sizes["w2a8-pow2"] == weights * 3 // 4
