"""edgekit profile: exact instruction counts per inference and per layer on emulated boards.

1. The counting plugin against hand-written assembly whose instruction counts follow
   from the code itself (no compiler involved).
2. A fixed model (tests/helpers/fixed_models.py: integer weights, power-of-two scales, no
   randomness, no training library) with its per-layer counts asserted as numbers, built
   with the portable reference kernels (`kernels="reference"`). They depend on the
   generated C (templates/cortexm) and on GCC 12.2 (Debian's gcc-arm-none-eabi); if a
   reference kernel template changes on purpose, re-measure with `edgekit profile` and
   update EXPECTED below. The default optimized (DSP) kernels are checked for the same
   properties and for needing fewer instructions.
3. The cycle estimate, the memory breakdown, profile.json and the CLI.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import build
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.profile import profile
from edgekit.backends.cortexm.profile.classifier import classify, instruction_cost
from edgekit.backends.cortexm.profile.runner import Zone, run_counted
from edgekit.errors import TargetError, ToolchainError
from edgekit.resources import resource_dir
from edgekit.targets import get_board, get_core
from helpers.fixed_models import fixed_mlp

# ---------------------------------------------------------------------------------------
# 1. the plugin against hand-written assembly
# ---------------------------------------------------------------------------------------
N1, N2, CALLS = 10, 7, 3
ASM = f"""
    .syntax unified
    .thumb
    .text
    .global ek_model_run
    .type ek_model_run, %function
    .thumb_func
ek_model_run:                 @ glue: 4 instructions
    push {{r4, lr}}
    bl ek_layer0_loop
    bl ek_layer1_call
    pop {{r4, pc}}
    .size ek_model_run, .-ek_model_run

    .type ek_layer0_loop, %function
    .thumb_func
ek_layer0_loop:               @ 2 + 2 * N1
    movs r0, #{N1}
1:  subs r0, r0, #1
    bne 1b
    bx lr
    .size ek_layer0_loop, .-ek_layer0_loop

    .type ek_layer1_call, %function
    .thumb_func
ek_layer1_call:               @ 3 + 5 * N2 (the helper's 2 per call count here)
    push {{lr}}
    movs r0, #{N2}
2:  bl helper
    subs r0, r0, #1
    bne 2b
    pop {{pc}}
    .size ek_layer1_call, .-ek_layer1_call

    .type helper, %function
    .thumb_func
helper:
    adds r1, r1, #1
    bx lr
    .size helper, .-helper
"""
MAIN = f"""
void ek_model_run(const void *in, void *out);
int main(void)
{{
    for (int i = 0; i < {CALLS}; ++i) {{
        ek_model_run(0, 0);
    }}
    return 0;
}}
"""
GLUE, LAYER0, LAYER1 = 4, 2 + 2 * N1, 3 + 5 * N2


@pytest.fixture(scope="module")
def asm_elf(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("asm")
    (d / "prog.S").write_text(ASM)
    (d / "main.c").write_text(MAIN)
    core, board = get_core("cortex-m4"), get_board("mps2-an386")
    script = tc.render_linker_script(core, board, d / "link.ld")
    fw = resource_dir("firmware")
    elf = d / "asm.elf"
    subprocess.run([tc.arm_gcc(), *core.cflags, "-O2", "-ffreestanding", "-nostdlib", f"-I{fw}",
                    str(fw / "startup_cortexm.c"), str(fw / "semihosting.c"), str(fw / "libc_min.c"),
                    str(d / "main.c"), str(d / "prog.S"), f"-T{script}", "-lgcc", "-o", str(elf)], check=True)
    return elf


def _sym(elf: Path, name: str) -> dict:
    return next(s for s in tc.symbols(elf) if s["name"] == name)


def _zones(elf):
    z = [_sym(elf, n) for n in ("ek_model_run", "ek_layer0_loop", "ek_layer1_call")]
    return [Zone(s["name"], s["addr"], s["addr"] + s["size"]) for s in z]


def test_plugin_counts_hand_written_assembly_exactly(asm_elf, tmp_path):
    zones = _zones(asm_elf)
    main = _sym(asm_elf, "main")
    text = [s for s in tc.symbols(asm_elf) if s["type"] in "tT"]
    code = (min(s["addr"] for s in text), max(s["addr"] + s["size"] for s in text))
    c = run_counted(asm_elf, "mps2-an386", tmp_path, zones, code, start=zones[0].lo,
                    stop=(main["addr"], main["addr"] + main["size"]), detail=-1)
    # one window per call of ek_model_run; per zone: glue, layer 0, layer 1, unattributed
    assert c.windows == [[GLUE, LAYER0, LAYER1, 0]] * CALLS
    assert not c.open_window
    assert c.all_instructions > CALLS * (GLUE + LAYER0 + LAYER1)  # startup and main run outside the windows
    # per-address detail (all windows kept): the helper counted in layer 1's zone
    helper = _sym(asm_elf, "helper")["addr"]
    assert c.detail[(2, helper)] == (CALLS * N2, 0)
    assert c.detail[(2, helper + 2)] == (CALLS * N2, CALLS * N2)  # bx lr: always taken
    bne0 = zones[1].lo + 4  # movs (2 bytes), subs (2 bytes), then bne
    assert c.detail[(1, bne0)] == (CALLS * N1, CALLS * (N1 - 1))  # taken except on the last iteration
    assert sum(n for n, _ in c.detail.values()) == CALLS * (GLUE + LAYER0 + LAYER1)


def test_plugin_without_window_counts_the_whole_run(asm_elf, tmp_path):
    zones = _zones(asm_elf)
    text = [s for s in tc.symbols(asm_elf) if s["type"] in "tT"]
    code = (min(s["addr"] for s in text), max(s["addr"] + s["size"] for s in text))
    a = run_counted(asm_elf, "mps2-an386", tmp_path, zones, code)
    b = run_counted(asm_elf, "mps2-an386", tmp_path, zones, code)
    assert a.all_instructions == b.all_instructions  # repeatable
    assert a.open_window and a.windows == []  # the run ended inside its only window (never closed)


def test_missing_plugin_is_a_clear_error(asm_elf, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_QEMU_PLUGIN", str(tmp_path / "nope.so"))
    with pytest.raises(ToolchainError, match="EDGEKIT_QEMU_PLUGIN=.*no such file"):
        run_counted(asm_elf, "mps2-an386", tmp_path, _zones(asm_elf), (0, 0x1000))


def test_setup_built_the_plugin():
    """`make setup` builds the plugin; edgekit finds it without any environment variable."""
    from edgekit.backends.cortexm.qemu_plugin import LIBRARY, find_plugin, plugin_dir

    path = find_plugin()
    assert path.name == LIBRARY and path.is_file()
    assert (plugin_dir() / "include" / "qemu-plugin.h").is_file(), "setup did not fetch qemu-plugin.h"


# ---------------------------------------------------------------------------------------
# 2. a fixed model: exact numbers
# ---------------------------------------------------------------------------------------
EXPECTED = {  # reference kernels, per layer Gemm_0, Gemm_1, Gemm_2, glue; GCC 12.2.1, QEMU 7.2
    "cortex-m4": (1184, 624, 261, 13),  # layers noipa (model.c.j2): pointer arguments passed
}
LAYERS = ("Gemm_0", "Gemm_1", "Gemm_2", "ek_model_run")


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory) -> Path:
    return fixed_mlp(tmp_path_factory.mktemp("fixed") / "fixed_mlp.onnx")


@pytest.fixture(scope="module")
def fixed_m4(fixed_onnx, tmp_path_factory) -> Path:
    """The fixed model on the M4 with the reference kernels: the exact numbers below."""
    out = tmp_path_factory.mktemp("fixed_builds") / "m4"
    build(fixed_onnx, "cortex-m4", "mps2-an386", out, kernels="reference")
    return out


@pytest.fixture(scope="module")
def fixed_m4_optimized(fixed_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixed_builds") / "m4opt"
    build(fixed_onnx, "cortex-m4", "mps2-an386", out)  # default: the DSP kernels
    return out


def test_fixed_model_instruction_counts_are_exact(fixed_m4):
    rep = profile(fixed_m4, count=4).to_json()
    rows = {r["name"]: r for r in rep["layers"]}
    got = tuple(rows[n]["instructions"] for n in LAYERS)
    assert got == EXPECTED["cortex-m4"]
    # the rows add up exactly to the inference, and the inference to the per-vector total
    assert sum(r["instructions"] for r in rep["layers"]) == rep["total"]["instructions"] == sum(got)
    assert rep["vectors"]["instructions"][0] == rep["total"]["instructions"]
    assert "(unattributed)" not in [r["label"] for r in rep["layers"]]
    # the same again: repeatable to the instruction, for every vector
    again = profile(fixed_m4, count=4, seed=5).to_json()
    assert [r["instructions"] for r in again["layers"]] == [r["instructions"] for r in rep["layers"]]
    assert again["vectors"]["instructions"] == rep["vectors"]["instructions"]


def test_optimized_kernels_are_counted_the_same_way(fixed_m4, fixed_m4_optimized):
    """The DSP kernels: rows add up, repeatable, fewer instructions than the reference kernels,
    and their SIMD multiply-accumulates show up as such."""
    ref = profile(fixed_m4, count=2, write=False).to_json()
    rep = profile(fixed_m4_optimized, count=3, write=False).to_json()
    again = profile(fixed_m4_optimized, count=3, write=False).to_json()
    assert [r["name"] for r in rep["layers"]] == list(LAYERS)
    assert sum(r["instructions"] for r in rep["layers"]) == rep["total"]["instructions"]
    assert [r["instructions"] for r in again["layers"]] == [r["instructions"] for r in rep["layers"]]
    assert rep["total"]["instructions"] < ref["total"]["instructions"]
    assert rep["layers"][0]["classes"].get("simd", 0) > 0


def test_fixed_model_macs_and_ratios(fixed_m4):
    rep = profile(fixed_m4, count=2).to_json()
    macs = {r["name"]: r["macs"] for r in rep["layers"]}
    assert macs == {"Gemm_0": 16 * 12, "Gemm_1": 12 * 8, "Gemm_2": 8 * 4, "ek_model_run": 0}
    for r in rep["layers"]:
        if r["macs"]:
            assert r["instructions_per_mac"] == pytest.approx(r["instructions"] / r["macs"])
    assert sum(r["share"] for r in rep["layers"]) == pytest.approx(1.0)


def test_counts_are_the_same_for_a_real_board_build(fixed_onnx, fixed_m4, tmp_path):
    """A NUCLEO-L4R5ZI build (flash at 0x08000000) is relinked for mps2-an386 and counted there:
    same core and flags, same code, same count; ms at the NUCLEO's 120 MHz."""
    out = tmp_path / "l4"
    build(fixed_onnx, "cortex-m4", "nucleo-l4r5zi", out, kernels="reference")
    rep = profile(out, count=2).to_json()
    ref = profile(fixed_m4, count=2).to_json()
    assert rep["counted_on"] == "mps2-an386"
    assert rep["total"]["instructions"] == ref["total"]["instructions"]
    assert rep["clock_hz"] == 120_000_000 and ref["clock_hz"] == 25_000_000
    assert rep["total"]["est_ms"] == pytest.approx(rep["total"]["est_cycles"] / 120e6 * 1e3)
    assert "4 MHz" in rep["clock_source"]  # says the firmware as built runs at the reset clock


def test_profile_board_must_carry_the_same_core(fixed_m4):
    with pytest.raises(TargetError, match="cortex-m4.*mps2-an500 has a cortex-m7|has a cortex-m7"):
        profile(fixed_m4, board="mps2-an500", write=False)
    with pytest.raises(TargetError, match="not emulated"):
        profile(fixed_m4, board="nucleo-l4r5zi", write=False)


# ---------------------------------------------------------------------------------------
# 3. estimate, breakdown, files, CLI
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mnemonic, operands, core, expected", [
    ("smlabb", "r2, ip, r0, r2", "cortex-m4", ("mac", 0)),
    ("mla", "r0, r1, r2, r0", "cortex-m3", ("mac", 0)),
    ("muls", "r0, r1", "cortex-m0plus", ("mul", 0)),
    ("smull", "r0, r1, r2, r3", "cortex-m4", ("mul_long", 0)),
    ("sdiv", "r0, r1, r2", "cortex-m4", ("div", 0)),
    ("ldrsb.w", "ip, [r3, #1]!", "cortex-m4", ("load", 0)),
    ("strb.w", "r3, [r6, #1]!", "cortex-m4", ("store", 0)),
    ("ldmia.w", "sp!, {r4, r5, r6, r7, r8, r9, pc}", "cortex-m4", ("ldm", 7)),
    ("push", "{r4-r7, lr}", "cortex-m0plus", ("ldm", 5)),
    ("bne.n", "146 <x>", "cortex-m4", ("branch", 0)),
    ("bls.n", "146 <x>", "cortex-m4", ("branch", 0)),
    ("bl", "124 <ek_layer0>", "cortex-m4", ("call", 0)),
    ("le", "lr, 14e <x>", "cortex-m55", ("branch", 0)),
    ("ite", "ne", "cortex-m4", ("it", 0)),
    ("movne", "r3, #0", "cortex-m4", ("alu", 0)),
    ("orrhi.w", "r3, r3, #1", "cortex-m4", ("alu", 0)),
    ("teq", "r0, r1", "cortex-m4", ("alu", 0)),
    ("usat", "r3, #8, r3", "cortex-m4", ("simd", 0)),
    ("sadd16", "r0, r1, r2", "cortex-m4", ("simd", 0)),
    ("vmla.i8", "q0, q1, q2", "cortex-m55", ("mve", 0)),
    ("vldr", "s0, [r0]", "cortex-m4", ("fpu", 0)),
    ("bkpt", "0x00ab", "cortex-m4", ("other", 0)),
])
def test_instruction_classes(mnemonic, operands, core, expected):
    assert classify(mnemonic, operands, get_core(core)) == expected


def test_instruction_cost_uses_the_core_table():
    t = get_core("cortex-m4").timing
    assert instruction_cost("load", 0, 10, 0, t) == 10 * t["load"]
    assert instruction_cost("branch", 0, 10, 9, t) == 10 * t["branch"] + 9 * t["branch_taken_extra"]
    assert instruction_cost("ldm", 7, 2, 2, t) == 2 * (t["ldm_base"] + 7 * t["ldm_per_reg"]) + 2 * t["branch_taken_extra"]
    assert instruction_cost("call", 0, 3, 3, t) == 3 * t["call"]  # the call's cost includes its refill
    m7 = get_core("cortex-m7").timing
    assert m7["alu"] < t["alu"]  # dual issue


def test_profile_files_memory_and_estimate(fixed_m4):
    rep = profile(fixed_m4, count=3).to_json()
    saved = json.loads((fixed_m4 / "profile.json").read_text())
    assert saved["total"] == rep["total"] and saved["layers"] == rep["layers"]
    assert "<svg" in (fixed_m4 / "profile.html").read_text()
    m = json.loads((fixed_m4 / "manifest.json").read_text())
    assert m["profile"]["instructions"] == rep["total"]["instructions"]
    assert m["profile"]["layers"]["Gemm_0"] == EXPECTED["cortex-m4"][0]
    # estimate: every counted instruction is classified, cycles follow the table, ms the clock
    for r in rep["layers"]:
        assert sum(r["classes"].values()) == r["instructions"]
        assert r["est_cycles"] >= r["instructions"] * min(rep["timing"].values()) - 1e-6
    assert rep["total"]["est_ms"] == pytest.approx(rep["total"]["est_cycles"] / 25e6 * 1e3)
    assert rep["unknown_addresses"] == []
    # memory: flash and RAM parts add up; the weights are the model's const arrays
    f, ram = rep["memory"]["flash"], rep["memory"]["ram"]
    assert f["code"] + f["weights"] + f["runtime"] == f["total"] == m["memory"]["flash_bytes"]
    assert ram["arena"] + ram["static"] + ram["stack"] == ram["total"] == m["memory"]["ram_bytes"]
    assert f["weights"] == 16 * 12 + 12 * 4 + 12 * 8 + 8 * 4 + 8 * 4 + 4 * 4  # int8 weights, int32 biases
    assert {s["symbol"] for s in rep["memory"]["weight_symbols"]} >= {"ek_Gemm_0_weight", "ek_Gemm_0_bias"}
    assert ram["arena"] == m["arena_bytes"]
    assert 0 < rep["memory"]["stack_used"] <= ram["stack"]


def test_profile_cli(fixed_m4):
    proc = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(fixed_m4), "--count", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("Gemm_0", "Gemm_1", "Gemm_2", "glue", "instr/MAC", "est. cycles", "est. ms", "ESTIMATES",
                 f"{sum(EXPECTED['cortex-m4']):,}"):
        assert word in out, out
    proc = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(fixed_m4), "--json", "--count", "2"],
                          capture_output=True, text=True, timeout=300)
    data = json.loads(proc.stdout)
    assert data["total"]["instructions"] == sum(EXPECTED["cortex-m4"])
    proc = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(fixed_m4), "--board", "mps2-an500"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_inputs_change_nothing_for_a_branch_free_kernel_but_are_used(fixed_m4, tmp_path):
    """--inputs: float vectors, quantized like verify does; here the kernels have no data-dependent
    branches, so every vector costs the same."""
    x = np.random.default_rng(3).normal(size=(5, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rep = profile(fixed_m4, inputs=tmp_path / "x.npy", vector=4, write=False).to_json()
    assert rep["vectors"]["count"] == 5 and rep["vector"] == 4
    assert set(rep["vectors"]["instructions"]) == {sum(EXPECTED["cortex-m4"])}


@pytest.mark.parametrize("target, board", [("cortex-m3", "mps2-an385"), ("cortex-m7", "mps2-an500"),
                                           ("cortex-m55", "mps3-an547"), ("cortex-m33", "mps2-an505"),
                                           ("cortex-m0plus", "microbit")])
def test_profile_on_every_emulated_board(fixed_onnx, tmp_path, target, board):
    out = tmp_path / board
    build(fixed_onnx, target, board, out)
    rep = profile(out, count=2, write=False).to_json()
    assert rep["counted_on"] == board
    names = [r["name"] for r in rep["layers"]]
    assert names == ["Gemm_0", "Gemm_1", "Gemm_2", "ek_model_run"]  # no unattributed row
    assert all(r["instructions"] > r["macs"] for r in rep["layers"][:3])
    assert sum(r["instructions"] for r in rep["layers"]) == rep["total"]["instructions"]
    assert rep["unknown_addresses"] == []
    classes = {k for r in rep["layers"] for k in r["classes"]}
    assert "other" not in classes, classes  # every executed instruction has a class of its own
    assert {"mac", "mul", "simd"} & classes and "load" in classes  # (SMLAD counts as SIMD)
    again = profile(out, count=2, write=False).to_json()
    assert again["total"]["instructions"] == rep["total"]["instructions"]
