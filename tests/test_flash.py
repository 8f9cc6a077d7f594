"""edgekit flash: emulated boards run on QEMU; real boards through pyocd or openocd.

No probe is attached on the test machines, so the real-board path is checked through
the exact commands edgekit builds, and through the no-probe failure: with pyocd and
openocd actually invoked where they are installed, it must be a clear error within
seconds, never a hang.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.api import build
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.flash import (FlashError, flash, openocd_command, pyocd_list_command,
                                            pyocd_run_command, run_streaming)
from edgekit.errors import TargetError, ToolchainError
from edgekit.targets import get_board
from helpers.fixed_models import fixed_mlp

HAVE_PYOCD = shutil.which("pyocd") is not None or (Path(sys.executable).parent / "pyocd").exists()
HAVE_OPENOCD = shutil.which("openocd") is not None
# "Fails within seconds, never hangs": each call below runs under a time limit, and a tool that
# waited for a probe would end in the time-limit error ("did not finish within"), not in the
# no-probe error the tests expect. No wall-clock time is asserted.
NO_PROBE_LIMIT = 60


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory) -> Path:
    return fixed_mlp(tmp_path_factory.mktemp("fixed") / "fixed_mlp.onnx")


@pytest.fixture(scope="module")
def builds(fixed_onnx, tmp_path_factory):
    d = tmp_path_factory.mktemp("flash_builds")
    out = {}
    for target, board in [("cortex-m4", "mps2-an386"), ("cortex-m4", "nucleo-l4r5zi"),
                          ("cortex-m0plus", "rpi-pico"), ("cortex-m7", "nucleo-f746zg"),
                          ("cortex-m33", "nucleo-l552ze-q")]:
        out[board] = d / board
        build(fixed_onnx, target, board, out[board])
    return out


# ---------------------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------------------
def test_openocd_command_for_a_flash_board(builds):
    elf = builds["nucleo-l4r5zi"] / "firmware.elf"
    assert openocd_command(get_board("nucleo-l4r5zi"), elf) == [
        "openocd", "-f", "board/st_nucleo_l4.cfg", "-c", "init", "-c", "reset halt",
        "-c", f"program {{{elf}}} verify", "-c", "arm semihosting enable", "-c", "reset run"]


def test_openocd_command_with_a_probe_serial_and_adapter_commands(builds):
    elf = Path("/build dir/firmware.elf")
    assert openocd_command(get_board("nrf52840-dk"), elf, uid="683456789", openocd="/usr/bin/openocd") == [
        "/usr/bin/openocd", "-f", "board/nordic_nrf52_dk.cfg", "-c", "adapter speed 4000",
        "-c", "adapter serial 683456789", "-c", "init", "-c", "reset halt",
        "-c", "program {/build dir/firmware.elf} verify", "-c", "arm semihosting enable", "-c", "reset run"]


def test_openocd_command_for_the_ram_loaded_rp2040(builds):
    elf = builds["rpi-pico"] / "firmware.elf"
    syms = {s["name"]: s["addr"] for s in tc.symbols(elf)}
    cmd = openocd_command(get_board("rpi-pico"), elf)
    assert cmd == ["openocd", "-f", "interface/cmsis-dap.cfg", "-f", "target/rp2040-core0.cfg",
                   "-c", "adapter speed 5000", "-c", "init", "-c", "reset halt",
                   "-c", f"load_image {{{elf}}}", "-c", "mww 0xe000ed08 0x20000000",
                   "-c", f"reg msp 0x{syms['__stack_top__']:08x}", "-c", "reg xPSR 0x01000000",
                   "-c", "arm semihosting enable", "-c", f"resume 0x{syms['reset_handler'] & ~1:08x}"]
    assert not any("program" in c for c in cmd)  # never written to the QSPI flash (no boot2)
    assert syms["vector_table"] == 0x20000000


@pytest.mark.parametrize("board, target, load", [("nucleo-l4r5zi", "stm32l4r5zitx", "flash"),
                                                 ("nucleo-f746zg", "stm32f746zgtx", "flash"),
                                                 ("nrf52840-dk", "nrf52840", "flash"),
                                                 ("rpi-pico", "rp2040_core0", "ram"),
                                                 ("nucleo-l552ze-q", "stm32l552zetxq", "flash")])
def test_pyocd_commands(board, target, load):
    elf = Path("/b/firmware.elf")
    assert pyocd_run_command(get_board(board), elf, timeout=60) == [
        sys.executable, "-m", "edgekit.backends.cortexm.pyocd_run", "--target", target, "--elf", str(elf),
        "--load", load, "--timeout", "60"]
    assert pyocd_run_command(get_board(board), elf, uid="0669FF")[-2:] == ["--uid", "0669FF"]


def test_pyocd_probe_listing_command(monkeypatch, tmp_path):
    fake = tmp_path / "pyocd"
    fake.write_text("#!/bin/sh\necho fake\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGEKIT_PYOCD", str(fake))
    assert pyocd_list_command() == [str(fake), "list", "--probes"]


def test_an_emulated_board_has_no_probe_commands():
    with pytest.raises(TargetError, match="no \\[probe\\] section"):
        openocd_command(get_board("mps2-an386"), Path("x.elf"))


# ---------------------------------------------------------------------------------------
# no probe attached: clear errors within seconds, with the real tools
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_PYOCD, reason="pyocd not installed (pip install 'edgekit[boards]')")
def test_no_probe_with_pyocd(builds):
    with pytest.raises(FlashError, match="no debug probe found") as e:
        flash(builds["nucleo-l4r5zi"], probe="pyocd", timeout=NO_PROBE_LIMIT)
    assert "did not finish" not in str(e.value)


@pytest.mark.skipif(not HAVE_PYOCD, reason="pyocd not installed (pip install 'edgekit[boards]')")
def test_pyocd_runner_without_a_probe_exits_at_once(builds, tmp_path):
    """The runner itself (past the probe listing) also gives up instead of waiting for a probe."""
    cmd = pyocd_run_command(get_board("nucleo-l4r5zi"), builds["nucleo-l4r5zi"] / "firmware.elf", timeout=20)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=NO_PROBE_LIMIT)
    assert proc.returncode == 120 and "no debug probe found by pyocd" in proc.stderr


@pytest.mark.skipif(not HAVE_OPENOCD, reason="openocd not installed (apt-get install openocd)")
@pytest.mark.parametrize("board", ["nucleo-l4r5zi", "rpi-pico", "nucleo-f746zg", "nucleo-l552ze-q"])
def test_no_probe_with_openocd(builds, board):
    with pytest.raises(FlashError) as e:
        flash(builds[board], probe="openocd", timeout=NO_PROBE_LIMIT)
    assert "no debug probe found by openocd" in str(e.value) and "did not finish" not in str(e.value)


@pytest.mark.skipif(not HAVE_OPENOCD, reason="openocd not installed (apt-get install openocd)")
def test_no_probe_from_the_cli(builds):
    proc = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(builds["nucleo-l4r5zi"]), "--probe",
                           "openocd", "--board", "nucleo-l4r5zi"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: no debug probe found by openocd for nucleo-l4r5zi" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_tools_are_named(builds, monkeypatch):
    monkeypatch.setenv("EDGEKIT_OPENOCD", "/nonexistent/openocd")
    with pytest.raises(ToolchainError, match="openocd not found.*apt-get install openocd"):
        flash(builds["nucleo-l4r5zi"], probe="openocd")
    monkeypatch.setenv("EDGEKIT_PYOCD", "/nonexistent/pyocd")
    with pytest.raises(ToolchainError, match="pyocd not found.*edgekit\\[boards\\]"):
        flash(builds["nucleo-l4r5zi"], probe="pyocd")


def test_a_probe_tool_that_hangs_is_stopped(tmp_path):
    """Anything that waits for a probe forever is killed at the time limit, its children too."""
    import os

    script = tmp_path / "hang.sh"
    script.write_text("#!/bin/sh\necho waiting for a probe\nsleep 600 &\necho $! > child.pid\nwait\n")
    script.chmod(0o755)
    lines = []
    with pytest.raises(FlashError, match="did not finish within 2 s"):
        run_streaming([str(script)], tmp_path, 2.0, lines.append, "waiting")
    assert lines == ["waiting for a probe"]
    child = int((tmp_path / "child.pid").read_text())
    for _ in range(100):  # the process group was killed; give the kernel a moment to reap the child
        try:
            os.kill(child, 0)
            state = open(f"/proc/{child}/stat").read().split()[2]
        except (ProcessLookupError, FileNotFoundError):
            break
        if state == "Z":  # a zombie: dead, not yet reaped
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the probe tool's child process {child} still runs")


# ---------------------------------------------------------------------------------------
# the build's board must match
# ---------------------------------------------------------------------------------------
def test_board_must_match_the_build(builds):
    with pytest.raises(TargetError, match="built for mps2-an386 \\(cortex-m4\\), not mps2-an500.*--target cortex-m7"):
        flash(builds["mps2-an386"], board="mps2-an500")
    with pytest.raises(TargetError, match="built for nucleo-l4r5zi.*not nucleo-f746zg"):
        flash(builds["nucleo-l4r5zi"], board="nucleo-f746zg", probe="openocd")
    with pytest.raises(TargetError, match="unknown probe tool"):
        flash(builds["nucleo-l4r5zi"], probe="jlink")


# ---------------------------------------------------------------------------------------
# emulated boards: the firmware runs, results stream back and are compared
# ---------------------------------------------------------------------------------------
def test_flash_an_emulated_board(builds):
    lines = []
    res = flash(builds["mps2-an386"], board="mps2-an386", count=12, on_line=lines.append)
    assert res.ok and res.tool == "qemu" and res.vectors == 12 and res.elements == 12 * 4
    assert lines[:2] == ["EK_VECTORS=12", f"EK_STACK_USED={res.stack_used}"]  # streamed as they came


def test_flash_reports_wrong_outputs(builds, tmp_path):
    """Firmware and IR that disagree (here: the IR's last bias moved by 64 LSB, the firmware
    unchanged): flash reports the mismatching elements and the CLI exits 1."""
    import numpy as np

    b = tmp_path / "broken"
    shutil.copytree(builds["mps2-an386"], b)
    consts = dict(np.load(b / "ir_constants.npz"))
    last_bias = [k for k in consts if k.endswith("_bias")][-1]
    consts[last_bias] = consts[last_bias] + 64 * 16  # 64 output LSB at this layer's requantization shift
    np.savez(b / "ir_constants.npz", **consts)
    res = flash(b, count=64)
    assert not res.ok and res.mismatches > 0 and res.exit_code == 0
    proc = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(b), "--count", "64"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "FAIL" in proc.stdout


def test_flash_time_limit_is_checked(builds):
    """--timeout must be a positive number of seconds (the default scales with the model's work)."""
    bad = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(builds["mps2-an386"]), "--timeout", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: timeout 0") and "Traceback" not in bad.stderr


def test_flash_cli_on_qemu(builds):
    proc = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(builds["mps2-an386"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "  | EK_VECTORS=16" in proc.stdout and "bit-exact with the simulator" in proc.stdout
