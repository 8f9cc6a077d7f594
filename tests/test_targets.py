"""Cores, boards, linker scripts and the fit check."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.api import build
from edgekit.backends.cortexm import toolchain as tc
from edgekit.errors import TargetError
from edgekit.targets import TIMING_CLASSES, get_board, get_core, list_boards, list_cores
from helpers.fixed_models import fixed_mlp

REPO = Path(__file__).resolve().parent.parent
REF = "reference"  # kernels whose size does not depend on the board (fit-check arithmetic)
QEMU_BOARDS = {"mps2-an385": "cortex-m3", "mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7",
               "mps3-an547": "cortex-m55", "mps2-an505": "cortex-m33", "microbit": "cortex-m0plus"}
REAL_BOARDS = {"nucleo-l4r5zi": "cortex-m4", "nucleo-f746zg": "cortex-m7", "nrf52840-dk": "cortex-m4",
               "rpi-pico": "cortex-m0plus", "nucleo-l552ze-q": "cortex-m33"}


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory) -> Path:
    return fixed_mlp(tmp_path_factory.mktemp("fixed") / "fixed_mlp.onnx")


# ---------------------------------------------------------------------------------------
# cores
# ---------------------------------------------------------------------------------------
def test_the_cores_of_the_issue_exist():
    assert {"cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"} <= set(list_cores())


@pytest.mark.parametrize("name", list_cores())
def test_core_description(name):
    c = get_core(name)
    assert c.name == name
    assert f"-mcpu={name}" in c.cflags and "-mthumb" in c.cflags
    assert set(c.features) <= {"dsp", "fpu", "mve"}
    assert set(c.timing) == set(TIMING_CLASSES), f"{name}: timing classes {sorted(set(TIMING_CLASSES) - set(c.timing))} missing"
    assert all(v >= 0 for v in c.timing.values()) and c.timing_source
    hard = "-mfloat-abi=hard" in c.cflags
    assert hard == c.has_fpu, "hard-float ABI exactly when the core has an FPU"


def test_core_features_match_the_silicon():
    assert get_core("cortex-m0plus").features == () and get_core("cortex-m0plus").arch == "armv6-m"
    assert get_core("cortex-m3").features == ()
    assert set(get_core("cortex-m4").features) == {"dsp", "fpu"}
    assert set(get_core("cortex-m33").features) == {"dsp", "fpu"} and get_core("cortex-m33").arch == "armv8-m.main"
    assert set(get_core("cortex-m55").features) == {"dsp", "fpu", "mve"}


@pytest.mark.parametrize("name", list_cores())
def test_core_flags_compile_and_define_the_features(name, tmp_path):
    """The flags are accepted by arm-none-eabi-gcc and switch on exactly the listed features."""
    c = get_core(name)
    src = tmp_path / "f.c"
    src.write_text("int x;\n")
    out = subprocess.run([tc.arm_gcc(), *c.cflags, "-dM", "-E", str(src)], capture_output=True, text=True,
                         check=True).stdout
    assert ("__ARM_FEATURE_DSP 1" in out) == c.has_dsp
    assert ("__ARM_FP " in out) == c.has_fpu
    assert ("__ARM_FEATURE_MVE" in out) == c.has_mve


# ---------------------------------------------------------------------------------------
# boards
# ---------------------------------------------------------------------------------------
def test_the_boards_of_the_issue_exist():
    boards = set(list_boards())
    assert set(QEMU_BOARDS) <= boards and set(REAL_BOARDS) <= boards
    for b, core in {**QEMU_BOARDS, **REAL_BOARDS}.items():
        assert get_board(b).core == core


@pytest.mark.parametrize("name", list_boards())
def test_board_description(name):
    b = get_board(name)
    assert b.name == name and b.core in list_cores()
    assert b.clock_hz > 0 and b.stack_bytes > 0 and b.stack_bytes % 8 == 0
    assert b.flash.length > 0 and b.ram.length > 0
    assert b.emulated or b.probe is not None, "a board is either emulated or reachable through a probe"
    for r in b.memory_map:  # the described regions cover the linker regions
        r = dict(r)
        assert {"name", "origin", "length", "note"} <= set(r)
    regions = [dict(r) for r in b.memory_map]
    used = [b.ram] if b.load == "ram" else [b.flash, b.ram]
    for reg in used:
        assert any(r["origin"] <= reg.origin and reg.end <= r["origin"] + r["length"] or
                   r["origin"] >= reg.origin and r["origin"] < reg.end for r in regions), f"{reg} not in memory_map"


@pytest.mark.parametrize("name, mcu, flash, ram, clock", [
    ("nucleo-l4r5zi", "STM32L4R5ZIT6", (0x08000000, 2 << 20), (0x20000000, 640 << 10), 120_000_000),
    ("nucleo-f746zg", "STM32F746ZGT6", (0x08000000, 1 << 20), (0x20000000, 320 << 10), 216_000_000),
    ("nrf52840-dk", "nRF52840-QIAA", (0x00000000, 1 << 20), (0x20000000, 256 << 10), 64_000_000),
    ("rpi-pico", "RP2040", (0x10000000, 2 << 20), (0x20000000, 264 << 10), 125_000_000),
    ("nucleo-l552ze-q", "STM32L552ZET6Q", (0x08000000, 512 << 10), (0x20000000, 256 << 10), 110_000_000),
])
def test_real_board_memory_maps(name, mcu, flash, ram, clock):
    b = get_board(name)
    assert b.mcu == mcu and not b.emulated
    assert (b.flash.origin, b.flash.length) == flash and (b.ram.origin, b.ram.length) == ram
    assert b.clock_hz == clock and b.reset_clock_hz
    assert b.probe.pyocd_target and b.probe.openocd_config and b.probe.interface


def test_openocd_configs_exist():
    scripts = Path("/usr/share/openocd/scripts")
    if not scripts.is_dir():
        pytest.skip("openocd is not installed here (apt-get install openocd)")
    for name in REAL_BOARDS:
        for cfg in get_board(name).probe.openocd_config:
            assert (scripts / cfg).is_file(), f"{name}: {cfg} is not in openocd's scripts"


def test_pyocd_targets_exist():
    pytest.importorskip("pyocd", reason="pyocd is not installed (pip install 'edgekit[boards]')")
    from pyocd.target import TARGET

    for name in REAL_BOARDS:
        p = get_board(name).probe
        assert (p.pyocd_target in TARGET) == p.pyocd_builtin, f"{name}: {p.pyocd_target} builtin={p.pyocd_builtin}"
        if not p.pyocd_builtin:
            assert f"pyocd pack install {p.pyocd_target}" in p.notes


def test_rp2040_is_ram_loaded_and_says_why():
    b = get_board("rpi-pico")
    assert b.load == "ram"
    text = Path(b.path).read_text()
    assert "boot2" in text and "256" in text and "XIP" in text
    assert "boot2" in b.notes


# ---------------------------------------------------------------------------------------
# linker scripts: every board's image lands in its memory
# ---------------------------------------------------------------------------------------
def _load_segments(elf: Path) -> list[tuple[int, int, int]]:
    out = subprocess.run([tc._binutil("readelf"), "-lW", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    segs = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[2], 16), int(f[3], 16), int(f[4], 16)))  # vaddr, paddr, filesz
    return segs


@pytest.mark.parametrize("name", list_boards())
def test_every_board_links_into_its_memory(name, fixed_onnx, tmp_path):
    b = get_board(name)
    out = tmp_path / name
    m = build(fixed_onnx, b.core, name, out).manifest
    elf = out / "firmware.elf"
    syms = {s["name"]: s["addr"] for s in tc.symbols(elf)}
    image = b.ram if b.load == "ram" else b.flash
    for vaddr, paddr, size in _load_segments(elf):
        if size:
            assert image.origin <= paddr and paddr + size <= image.end or \
                b.ram.origin <= paddr and paddr + size <= b.ram.end, f"segment at 0x{paddr:x} outside {name}"
    assert syms["vector_table"] == image.origin  # the vector table is where the core (or debugger) looks
    assert b.ram.origin < syms["__stack_top__"] <= b.ram.end
    if b.load == "ram":  # nothing in the QSPI flash window: no image that would need boot2
        assert all(not (b.flash.origin <= p < b.flash.end) for _, p, s in _load_segments(elf) if s)
    assert m.fit["fits"] and m.board_description["name"] == name


# ---------------------------------------------------------------------------------------
# the fit check
# ---------------------------------------------------------------------------------------
def _tiny_board(path: Path, flash_len: int, ram_len: int, stack: int = 1024, load: str = "flash") -> Path:
    path.write_text(f"""
name = "tiny"
description = "a board with tiny memory, for the fit check"
core = "cortex-m4"
qemu_machine = "mps2-an386"
clock_hz = 1_000_000
stack_bytes = {stack}
load = "{load}"
flash = {{ origin = 0x00000000, length = {flash_len} }}
ram = {{ origin = 0x20000000, length = {ram_len} }}
""")
    return path


@pytest.fixture(scope="module")
def reference(fixed_onnx, tmp_path_factory):
    """The fixed model on mps2-an386: same core and flags as the tiny board, so the same sizes
    (with the reference kernels: the optimized ones are chosen with the board's memory in mind)."""
    out = tmp_path_factory.mktemp("ref") / "m4"
    return build(fixed_onnx, "cortex-m4", "mps2-an386", out, kernels=REF).manifest


def _tiny_ram_used(reference) -> int:
    """RAM the linker places on the tiny board: the reference's RAM region (sections plus alignment
    padding) with the tiny board's 1 KiB stack instead of mps2-an386's 8 KiB."""
    ram_used = reference.fit["regions"][1]["used"] - 8192 + 1024
    assert 0 <= ram_used - (reference.memory["ram_bytes"] - 8192 + 1024) < 8
    return ram_used


def test_fit_check_reports_every_region(fixed_onnx, reference, tmp_path):
    flash_used = reference.fit["regions"][0]["used"]  # sections plus alignment padding
    assert 0 <= flash_used - reference.memory["flash_bytes"] < 8
    ram_used = _tiny_ram_used(reference)
    board = _tiny_board(tmp_path / "tiny.toml", 1024, 512)
    with pytest.raises(TargetError) as e:
        build(fixed_onnx, "cortex-m4", str(board), tmp_path / "out", kernels=REF)
    msg = str(e.value)
    assert "does not fit tiny" in msg
    assert f"flash by {flash_used - 1024:,} bytes" in msg and f"RAM by {ram_used - 512:,} bytes" in msg
    assert re.search(rf"flash\s+{flash_used:,} of\s+1,024 bytes: OVER by {flash_used - 1024:,}", msg), msg
    assert re.search(rf"RAM\s+{ram_used:,} of\s+512 bytes: OVER by {ram_used - 512:,}", msg), msg
    bd = reference.memory_breakdown
    assert f"weights {bd['flash']['weights']:,}" in msg and f"arena {bd['ram']['arena']:,}" in msg
    assert not (tmp_path / "out").exists()


def test_fit_check_names_only_the_region_that_is_over(fixed_onnx, reference, tmp_path):
    ram_used = _tiny_ram_used(reference)
    board = _tiny_board(tmp_path / "tiny.toml", 1 << 20, ram_used - 16)
    with pytest.raises(TargetError) as e:
        build(fixed_onnx, "cortex-m4", str(board), tmp_path / "out", kernels=REF)
    msg = str(e.value)
    assert "over in RAM by 16 bytes" in msg and "flash by" not in msg
    assert "flash" in msg and "fits" in msg  # the region that fits is reported too


def test_fit_check_for_a_ram_loaded_board(fixed_onnx, reference, tmp_path):
    """load = "ram": code, weights, data and stack share the one region (plus alignment padding)."""
    parts = reference.memory["flash_bytes"] + reference.memory["ram_bytes"] - 8192 + 1024 \
        - reference.memory["data_bytes"]
    board = _tiny_board(tmp_path / "tiny.toml", 1 << 20, 2048, load="ram")
    with pytest.raises(TargetError) as e:
        build(fixed_onnx, "cortex-m4", str(board), tmp_path / "out", kernels=REF)
    over = int(re.search(r"over in RAM by ([\d,]+) bytes", str(e.value)).group(1).replace(",", ""))
    used = over + 2048
    assert parts <= used < parts + 16  # at most a few bytes of alignment between sections
    ok = _tiny_board(tmp_path / "ok.toml", 1 << 20, used, load="ram")  # exactly enough
    m = build(fixed_onnx, "cortex-m4", str(ok), tmp_path / "fits", kernels=REF).manifest
    reg = m.fit["regions"][0]
    assert reg["used"] == used and reg["free"] == 0 and sum(reg["contents"].values()) == used
    tight = _tiny_board(tmp_path / "tight.toml", 1 << 20, used - 1, load="ram")  # one byte short
    with pytest.raises(TargetError, match="over in RAM by 1 bytes"):
        build(fixed_onnx, "cortex-m4", str(tight), tmp_path / "short", kernels=REF)


def test_fit_report_in_the_manifest(reference):
    fit = reference.fit
    assert fit["fits"] and [r["region"] for r in fit["regions"]] == ["flash", "RAM"]
    for r in fit["regions"]:
        assert sum(r["contents"].values()) == r["used"] and r["over"] == 0 and r["free"] == r["size"] - r["used"]


def test_fit_error_from_the_cli(fixed_onnx, tmp_path):
    board = _tiny_board(tmp_path / "tiny.toml", 1024, 512)
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(fixed_onnx), "--target", "cortex-m4",
                           "--board", str(board), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the model does not fit tiny")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("length = 512", "length = 0"), "outside the 32-bit address space or empty"),
    (lambda t: t.replace("origin = 0x20000000", "origin = 0x00000100"), "overlap"),
    (lambda t: t.replace('load = "flash"', 'load = "xip"'), "load must be"),
    (lambda t: t.replace("clock_hz = 1_000_000", ""), "missing clock_hz"),
    (lambda t: t + "\n[[[", "invalid TOML"),
])
def test_bad_board_files(tmp_path, edit, message):
    p = _tiny_board(tmp_path / "b.toml", 1024, 512)
    p.write_text(edit(p.read_text()))
    with pytest.raises(TargetError, match=message):
        get_board(str(p))


def test_unknown_board_file(tmp_path):
    with pytest.raises(TargetError, match="no such board file"):
        get_board(str(tmp_path / "nope.toml"))
