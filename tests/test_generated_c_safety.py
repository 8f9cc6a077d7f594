"""The generated C is free of undefined behaviour and immune to a GCC 12 miscompile (issue 17, bug 1).

- A minimal C reproducer of the GCC bug, run on QEMU: with ``noinline`` layer functions and
  the flags edgekit uses, -O2 drops a call; with the layer attribute of ``model.c.j2`` it does not.
- The model that hit it (two 1-channel 1x1 Conv1d -> shared quantizer -> concat -> Conv1d)
  verifies bit-exactly on every emulated core and the host.
- The host build of the generated C under AddressSanitizer and UBSan equals the simulator.
- The firmware gives the same outputs at -O1, -O2, -Os and -O3.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import brevitas.nn as qnn
import pytest
import torch
from torch import nn

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.manifest import load_manifest
from edgekit.qat import export_qonnx
from edgekit.resources import resource_dir
from edgekit.targets import get_board, get_core

from helpers.brevitas_models import A, qconv1d, qid
from helpers.calibration import calibrate
from helpers.op_models import op_models

# The GCC 12.2 bug (arm-none-eabi, -O2): with constant arena addresses IPA-CP clones `concat`
# without parameters; IVOPTs addresses one of its stores as MEM[0B + (idx - &arena)], the
# local pure-const pass takes a store through a NULL base for a trap ("NULL memory access;
# terminating BB"), declares the clone pure, and DCE removes its call from main. There is no
# aliasing here (and no restrict): the program is valid C and must return 96.
REPRODUCER = r"""
#include <stdint.h>

EK_LAYER_DEFINITION

static int32_t arena[7];
#define ARENA ((int8_t *)arena)

EK_LAYER void concat(const int8_t *a, const int8_t *b, int8_t *out)
{
    for (int32_t p = 0; p < 6; ++p) {
        out[p * 2] = a[p];
        out[p * 2 + 1] = b[p];
    }
}

EK_LAYER void fill(int8_t *out, int8_t v)
{
    for (int32_t i = 0; i < 6; ++i) {
        out[i] = (int8_t)(v + i);
    }
}

EK_LAYER int32_t sum(const int8_t *in)
{
    int32_t s = 0;
    for (int32_t i = 0; i < 12; ++i) {
        s += in[i];
    }
    return s;
}

int main(void)
{
    fill(ARENA + 12, 1);
    fill(ARENA + 20, 10);
    concat(ARENA + 12, ARENA + 20, ARENA + 0);
    return (int)sum(ARENA + 0); /* (1 + ... + 6) + (10 + ... + 15) = 96 */
}
"""
EXPECTED = 96
UNPROTECTED = "#define EK_LAYER static __attribute__((noinline))"


def _layer_definition_of_model_c() -> str:
    """The EK_LAYER block of templates/cortexm/model.c.j2, as every build emits it."""
    text = (resource_dir("templates") / "cortexm" / "model.c.j2").read_text()
    m = re.search(r"^#if defined\(__clang__\)\n.*?^#endif\n", text, re.M | re.S)
    assert m and "#define EK_LAYER" in m.group(0), "model.c.j2 no longer defines EK_LAYER as expected"
    return m.group(0)


def _run_reproducer(tmp: Path, layer_definition: str, optimization: str, board_name: str) -> int:
    board = get_board(board_name)
    core = get_core(board.core)
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "reproducer.c"
    src.write_text(REPRODUCER.replace("EK_LAYER_DEFINITION", layer_definition))
    fw = resource_dir("firmware")
    script = tc.render_linker_script(core, board, tmp / "link.ld")
    flags = [optimization if f == "-O2" else f for f in tc.FIRMWARE_CFLAGS]
    elf = tmp / "reproducer.elf"
    subprocess.run([tc.arm_gcc(), *core.cflags, *tc.WARNINGS, *flags, f"-I{fw}", "-nostdlib", str(src),
                    *(str(fw / f) for f in ("startup_cortexm.c", "semihosting.c", "libc_min.c")),
                    f"-T{script}", "-Wl,--gc-sections", "-lgcc", "-o", str(elf)], check=True, capture_output=True)
    proc = subprocess.run(tc.qemu_command(elf, board.qemu_machine), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return proc.returncode


def _gcc_major() -> int:
    out = subprocess.run([tc.arm_gcc(), "-dumpversion"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().split(".")[0])


def test_gcc_reproducer_wrong_with_noinline_right_with_the_layer_attribute(tmp_path):
    protected = _layer_definition_of_model_c()
    for opt in ("-O1", "-O2", "-Os", "-O3"):
        assert _run_reproducer(tmp_path / f"p{opt}", protected, opt, "mps2-an386") == EXPECTED, opt
    unprotected = _run_reproducer(tmp_path / "u", UNPROTECTED, "-O2", "mps2-an386")
    if _gcc_major() == 12:  # the compiler edgekit ships with (Debian 12): the bug is there
        assert unprotected != EXPECTED, "GCC 12 -O2 no longer drops the call: the reproducer lost its point"


class ConcatOf1x1(nn.Module):
    """The graph that hit the bug: (2, 6) -> two 1-channel 1x1 Conv1d -> shared quantizer -> concat -> Conv1d."""

    def __init__(self):
        super().__init__()
        self.inp = qid()
        self.a = qconv1d(2, 1, 1)
        self.b = qconv1d(2, 1, 1)
        self.shared = qid()
        self.c = qconv1d(2, 3, 1)
        self.out = qnn.QuantIdentity(act_quant=A, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        cat = torch.cat([self.shared(self.a(x)).value, self.shared(self.b(x)).value], dim=1)
        return self.out(self.c(self.shared(cat)))


@pytest.fixture(scope="module")
def concat_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = calibrate(ConcatOf1x1(), (2, 6))
    return export_qonnx(model, torch.zeros(1, 2, 6), tmp_path_factory.mktemp("concat") / "concat1x1.onnx")


@pytest.mark.parametrize("board", ["microbit", "mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505",
                                   "mps3-an547"])
def test_concat_of_1x1_convs_bit_exact_on_every_core(concat_onnx, board, tmp_path):
    build(concat_onnx, get_board(board).core, board, tmp_path / "b")
    rep = verify(tmp_path / "b", count=32, seed=2)
    assert rep.ok and all(s.mismatches == 0 for s in rep.stages if s.must_be_exact), rep.table()
    calls = re.search(r"void ek_model_run\(.*?\n}\n", (tmp_path / "b" / "src" / "model.c").read_text(), re.S)
    assert "ek_layer2_Concat" in calls.group(0)


def test_no_restrict_parameter_overlaps_another(concat_onnx, tmp_path):
    """In-place layers (the requantize over the concat here) get no restrict on either side."""
    build(concat_onnx, "cortex-m4", "mps2-an386", tmp_path / "b")
    src = (tmp_path / "b" / "src" / "model.c").read_text()
    signature = re.search(r"void (ek_layer\d+_Quant_\w+)\(([^)]*)\)", src)
    call = re.search(re.escape(signature.group(1)) + r"\(\(const int8_t \*\)\(EK_ARENA \+ (\d+)\), "
                     r"\(int8_t \*\)\(EK_ARENA \+ (\d+)\)\)", src)
    assert call.group(1) == call.group(2), "the requantize should run in place over the concat"
    assert "restrict" not in signature.group(2)


def _sanitized_copy(build_dir: Path, dest: Path) -> Path:
    """A copy of the build whose host runner is compiled with ASan + UBSan (any report aborts)."""
    shutil.copytree(build_dir, dest)
    manifest = load_manifest(dest)
    exe = dest / manifest.host_runner
    sources = [dest / "src" / "model.c"] + [dest / "firmware" / f for f in tc.HOST_SOURCES]
    subprocess.run([tc.host_cc(), *tc.WARNINGS, "-O2", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", f"-I{dest / 'src'}",
                    f"-I{dest / 'firmware'}", *map(str, sources), "-o", str(exe)], check=True, capture_output=True)
    return dest


SANITIZED_OP_MODELS = ["concat", "residual_add", "residual_of_own_input", "inplace_dw_pw_chain", "head_softmax",
                       "depthwise_w2_packed", "conv1d_stride2_dil", "maxpool_3x3_s2_pad", "trunc_avgpool_3x3",
                       "transpose_flatten_2d", "sigmoid"]


@pytest.mark.parametrize("name", SANITIZED_OP_MODELS)
@pytest.mark.parametrize("kernels", ["reference", "optimized"])
def test_host_build_under_asan_ubsan(name, kernels, tmp_path):
    """The host build under the sanitisers: no report, and outputs equal to the simulator's.
    (The host build takes the reference kernels; ``optimized`` changes the planner's scratch use.)"""
    factory, shape, _ = op_models()[name]
    torch.manual_seed(7)
    model = calibrate(factory(), shape)
    onnx_path = export_qonnx(model, torch.zeros(1, *shape), tmp_path / f"{name}.onnx")
    build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b", kernels=kernels)
    rep = verify(_sanitized_copy(tmp_path / "b", tmp_path / "asan"), count=64, seed=3, stages=("host",))
    assert rep.ok and rep.stages[-1].mismatches == 0, rep.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fc-autoencoder", "har-cnn", "ds-cnn"])
def test_zoo_host_build_under_asan_ubsan(name, tmp_path):
    from edgekit.qat.zoo import ZOO
    from edgekit.qat.zoo import calibrate as zoo_calibrate

    torch.manual_seed(0)
    model = zoo_calibrate(ZOO[name]())
    onnx_path = export_qonnx(model, torch.zeros(1, *model.input_shape), tmp_path / f"{name}.onnx")
    build(onnx_path, "cortex-m4", "mps2-an386", tmp_path / "b")
    rep = verify(_sanitized_copy(tmp_path / "b", tmp_path / "asan"), count=4, stages=("host",))
    assert rep.ok and rep.stages[-1].mismatches == 0, rep.table()


@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
def test_firmware_same_outputs_at_every_optimization_level(concat_onnx, board, tmp_path):
    """-O1, -O2, -Os and -O3 firmware all equal the simulator (the bug showed at -O2 only)."""
    torch.manual_seed(3)
    factory, shape, _ = op_models()["inplace_dw_pw_chain"]
    chain = export_qonnx(calibrate(factory(), shape), torch.zeros(1, *shape), tmp_path / "chain.onnx")
    for source in (concat_onnx, chain):
        base = tmp_path / source.stem
        build(source, get_board(board).core, board, base)
        manifest = load_manifest(base)
        core = get_core(manifest.target)
        for opt in ("-O1", "-O2", "-Os", "-O3"):
            dest = tmp_path / f"{source.stem}{opt}"
            shutil.copytree(base, dest)
            objects = tc.compile_objects(dest, core, optimization=opt)
            tc.link_firmware(dest, core, objects, dest / "firmware" / "link.ld", dest / manifest.firmware)
            rep = verify(dest, count=32, seed=4, stages=("qemu",))
            assert rep.ok and rep.stages[-1].mismatches == 0, f"{source.stem} {opt}\n{rep.table()}"
