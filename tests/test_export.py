"""edgekit export: a standalone project that builds without Python or edgekit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import build
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.export import export
from edgekit.errors import BuildDirError
from helpers.fixed_models import fixed_mlp


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("export")
    onnx = fixed_mlp(d / "fixed.onnx")
    b = d / "build"
    build(onnx, "cortex-m4", "mps2-an386", b)
    return b, export(b, d / "project")


def _bare_path(tmp: Path, tools: list[str]) -> str:
    """A PATH holding only the named tools: no python, no edgekit."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for t in tools:
        found = shutil.which(t)
        assert found, f"{t} is not installed"
        (bin_dir / t).symlink_to(found)
    return str(bin_dir)


def _expected(build_dir: Path, codes: np.ndarray) -> np.ndarray:
    from edgekit.ir.graph import Graph
    from edgekit.sim import simulate

    g = Graph.load(build_dir)
    return simulate(g, codes)[g.outputs[0]].reshape(-1)


def test_export_layout(exported):
    b, p = exported
    for f in ("Makefile", "CMakeLists.txt", "README.md", "cmake/arm-none-eabi.cmake", "src/model.c", "src/model.h",
              "src/ek_contract.h", "firmware/harness.c", "firmware/startup_cortexm.c", "firmware/link.ld"):
        assert (p / f).is_file(), f
    assert (p / "src" / "model.c").read_text() == (b / "src" / "model.c").read_text()
    for f in ("Makefile", "CMakeLists.txt", "cmake/arm-none-eabi.cmake"):  # no step runs Python
        code = [ln.split("#")[0] for ln in (p / f).read_text().lower().splitlines()]
        assert not any("python" in ln or "edgekit " in ln for ln in code), f
    assert "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16" in (p / "Makefile").read_text()


def test_make_builds_the_library_and_firmware_without_python(exported, tmp_path):
    _, p = exported
    proj = tmp_path / "elsewhere" / "model_lib"
    shutil.copytree(p, proj)  # nothing refers back to the build or to edgekit
    env = {"PATH": _bare_path(tmp_path, ["make", "mkdir", "rm", "arm-none-eabi-gcc", "arm-none-eabi-ar"]),
           "HOME": str(tmp_path)}
    proc = subprocess.run(["make"], cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lib = proj / "build" / "libedgekit_model.a"
    syms = subprocess.run([tc._binutil("nm"), str(lib)], capture_output=True, text=True, check=True).stdout
    assert " T ek_model_run" in syms
    proc = subprocess.run(["make", "firmware"], cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the harness built by the exported Makefile gives the simulator's outputs on QEMU
    codes = np.random.default_rng(0).integers(-128, 128, size=(10, 16)).astype(np.int8)
    work = tmp_path / "run"
    work.mkdir()
    codes.tofile(work / "inputs.bin")
    tc.run_qemu(proj / "build" / "firmware.elf", "mps2-an386", work)
    got = np.fromfile(work / "outputs.bin", dtype=np.int8)
    assert np.array_equal(got, _expected(exported[0], codes).astype(np.int8))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_builds_the_library_and_firmware(exported, tmp_path):
    _, p = exported
    proj = tmp_path / "proj"
    shutil.copytree(p, proj)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    cfg = subprocess.run(["cmake", "-S", str(proj), "-B", str(tmp_path / "b"),
                          f"-DCMAKE_TOOLCHAIN_FILE={proj / 'cmake' / 'arm-none-eabi.cmake'}", "-DEDGEKIT_FIRMWARE=ON"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    assert (tmp_path / "b" / "libedgekit_model.a").is_file()
    codes = np.random.default_rng(1).integers(-128, 128, size=(6, 16)).astype(np.int8)
    codes.tofile(tmp_path / "inputs.bin")
    tc.run_qemu(tmp_path / "b" / "firmware.elf", "mps2-an386", tmp_path)
    got = np.fromfile(tmp_path / "outputs.bin", dtype=np.int8)
    assert np.array_equal(got, _expected(exported[0], codes).astype(np.int8))


def test_export_refuses_a_foreign_folder_and_replaces_its_own(exported, tmp_path):
    b, _ = exported
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(BuildDirError, match="not empty"):
        export(b, other)
    assert (other / "notes.txt").read_text() == "keep me"
    p = export(b, tmp_path / "p")
    (p / "src" / "stale.c").write_text("")
    export(b, p)  # an earlier export is replaced
    assert not (p / "src" / "stale.c").exists()


def test_export_cli(exported, tmp_path):
    b, _ = exported
    proc = subprocess.run([sys.executable, "-m", "edgekit", "export", str(b), "-o", str(tmp_path / "proj")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "proj" / "Makefile").is_file(), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edgekit", "export", str(tmp_path), "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
