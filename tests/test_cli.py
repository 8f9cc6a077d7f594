"""The ``edgekit`` command line end to end (help, version, targets, build, verify) and packaging."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import edgekit

REPO = Path(__file__).resolve().parent.parent
EDGEKIT = [sys.executable, "-m", "edgekit"]
TARGET = ["--target", "cortex-m4", "--board", "mps2-an386"]
TOOL_VARS = ("EDGEKIT_ARM_GCC", "EDGEKIT_ARM_SIZE", "EDGEKIT_HOST_CC", "EDGEKIT_QEMU")
DATA_DIRS = ("templates", "targets", "firmware")


def run_cli(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    full_env = {k: v for k, v in os.environ.items() if k not in TOOL_VARS}
    full_env.update(env or {})
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


# ---------------------------------------------------------------------------------------
# help, version, targets
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, expected", [
    ([], ["build", "verify", "targets", "--version"]),
    (["build"], ["model", "--target", "--board", "--output"]),
    (["verify"], ["build_dir", "--inputs", "--count", "--seed", "--skip", "--json"]),
    (["targets"], []),
], ids=["edgekit", "build", "verify", "targets"])
def test_help(command, expected):
    proc = ok(run_cli(*command, "--help"))
    assert proc.stdout.startswith(f"usage: {' '.join(['edgekit', *command])}"), proc.stdout
    for word in expected:
        assert word in proc.stdout, f"{word!r} missing from\n{proc.stdout}"
    assert proc.stderr == ""


def test_no_command_prints_usage_and_fails():
    proc = run_cli()
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: edgekit"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_version():
    proc = ok(run_cli("--version"))
    assert proc.stdout.strip() == f"edgekit {edgekit.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", edgekit.__version__)
    assert edgekit.__version__ == metadata.version("edgekit")  # the package metadata agrees


def test_targets_lists_cores_and_boards():
    out = ok(run_cli("targets")).stdout
    cores = {line.split()[1] for line in out.splitlines() if line.startswith("core ")}
    boards = {line.split()[1] for line in out.splitlines() if line.startswith("board ")}
    fpgas = {line.split()[1] for line in out.splitlines() if line.startswith("fpga ")}
    assert {"cortex-m4", "cortex-m3"} <= cores
    assert {"mps2-an386", "mps2-an385"} <= boards
    # exactly the descriptions shipped in targets/, every line a core, a board or an FPGA board
    assert cores == {p.stem for p in (REPO / "targets" / "cores").glob("*.toml")}
    assert boards == {p.stem for p in (REPO / "targets" / "boards").glob("*.toml")}
    assert fpgas == {p.stem for p in (REPO / "targets" / "fpga").glob("*.toml")} >= {"pynq-z2", "zcu104"}
    assert len(out.splitlines()) == len(cores) + len(boards) + len(fpgas)
    an386 = next(line for line in out.splitlines() if line.startswith("board mps2-an386 "))
    assert "KiB" in an386 and "core cortex-m4" in an386
    pynq = next(line for line in out.splitlines() if line.startswith("fpga  pynq-z2 "))
    assert "part xc7z020clg400-1" in pynq and "53,200 LUT" in pynq and "220 DSP" in pynq
    # the names form one column: every description starts at the same place
    starts = {len(line) - len(line[6 + len(line.split()[1]):].lstrip()) for line in out.splitlines()}
    assert len(starts) == 1, starts
    doc = json.loads(ok(run_cli("targets", "--json")).stdout)
    assert {c["name"] for c in doc["cores"]} == cores and {b["name"] for b in doc["boards"]} == boards
    assert {f["name"]: f["part"] for f in doc["fpga_boards"]}["pynq-z2"] == "xc7z020clg400-1"


# ---------------------------------------------------------------------------------------
# build and verify
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_build(pow2_onnx, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cli") / "pow2_build"
    return out, run_cli("build", pow2_onnx, *TARGET, "-o", out)


def test_build(cli_build, pow2_onnx):
    out, proc = cli_build
    ok(proc)
    assert proc.stdout.startswith(f"built {out} for cortex-m4 on mps2-an386: 3 layers"), proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["target"], manifest["board"]) == ("cortex-m4", "mps2-an386")
    assert manifest["source"] == str(pow2_onnx.resolve())
    for rel in ("firmware.elf", "host/ek_host_runner", "model.onnx", "src/model.c"):
        assert (out / rel).is_file(), rel
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_verify_json(cli_build):
    out, build_proc = cli_build
    ok(build_proc)
    proc = ok(run_cli("verify", out, "--json", "--count", "64"))
    rep = json.loads(proc.stdout)
    assert rep["ok"] is True
    assert rep["vectors"] == 64 and rep["board"] == "mps2-an386" and rep["output_shape"] == [5]
    names = [s["stage"] for s in rep["stages"]]
    assert names == ["simulator", "qonnx (float32)", "host C", "firmware (mps2-an386)"]
    for s in rep["stages"]:
        assert s["mismatches"] == 0 and s["ok"] is True, s
        assert s["elements"] == 64 * 5, s
    assert rep["memory"]["stack_used_bytes"] > 0  # reported by the firmware run


def test_verify_skip_stages(cli_build):
    out, build_proc = cli_build
    ok(build_proc)
    table = ok(run_cli("verify", out, "--skip", "qemu", "--skip", "qonnx", "--count", "32")).stdout
    assert "host C" in table and "PASS" in table
    assert "qonnx (float32)" not in table and "firmware (" not in table
    rep = json.loads(ok(run_cli("verify", out, "--skip", "qemu", "--skip", "qonnx", "--json",
                                "--count", "32")).stdout)
    assert rep["ok"] is True
    assert [s["stage"] for s in rep["stages"]] == ["simulator", "host C"]


def test_verify_with_inputs_file(cli_build, tmp_path):
    out, build_proc = cli_build
    ok(build_proc)
    x = np.random.default_rng(3).uniform(-3, 3, size=(7, 4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rep = json.loads(ok(run_cli("verify", out, "--inputs", tmp_path / "x.npy", "--json")).stdout)
    assert rep["ok"] is True and rep["vectors"] == 7
    assert rep["input_source"] == str(tmp_path / "x.npy")
    assert all(s["mismatches"] == 0 and s["elements"] == 35 for s in rep["stages"])


def test_relative_paths(pow2_onnx, tmp_path):
    """Build and verify with paths relative to the working directory, as a user types them."""
    shutil.copyfile(pow2_onnx, tmp_path / "model.onnx")
    ok(run_cli("build", "model.onnx", *TARGET, "-o", "out", cwd=tmp_path))
    assert (tmp_path / "out" / "manifest.json").is_file()
    rep = json.loads(ok(run_cli("verify", "out", "--json", "--count", "16", cwd=tmp_path)).stdout)
    assert rep["ok"] is True
    assert len(rep["stages"]) == 4 and all(s["mismatches"] == 0 for s in rep["stages"])


def test_rebuild_over_previous_build(cli_build, pow2_onnx, tmp_path):
    """-o naming an earlier edgekit build replaces it (the build refuses only foreign directories)."""
    out, build_proc = cli_build
    ok(build_proc)
    again = tmp_path / "again"
    shutil.copytree(out, again, symlinks=True)
    (again / "stale.txt").write_text("from an older build\n")
    ok(run_cli("build", pow2_onnx, *TARGET, "-o", again))
    assert not (again / "stale.txt").exists()
    assert (again / "manifest.json").is_file() and (again / "firmware.elf").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


# ---------------------------------------------------------------------------------------
# packaging
# ---------------------------------------------------------------------------------------
def _data_files() -> list[str]:
    """Every file in the repository's data directories, relative to the repository root."""
    files = []
    for d in DATA_DIRS:
        for p in (REPO / d).rglob("*"):
            rel = p.relative_to(REPO)
            if p.is_file() and "__pycache__" not in rel.parts and not p.name.startswith("."):
                files.append(rel.as_posix())
    return sorted(files)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the checkout itself gets no build/ or egg-info)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", "venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".cache",
        "out", "demo_out", "*.elf"))
    dist = root / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", ".", "-w", str(dist)]
    proc = subprocess.run([*cmd[:5], "--no-build-isolation", *cmd[5:]], cwd=src, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0 and "setuptools" in proc.stdout + proc.stderr:  # too old for pyproject.toml
        proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(dist.glob("edgekit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_data_and_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = _data_files()
    assert len(data) >= 10 and "targets/cores/cortex-m4.toml" in data  # the walk found the data
    missing = [f for f in data if f"edgekit/_data/{f}" not in names]
    assert not missing, f"not in {wheel.name}: {missing}"
    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "edgekit").rglob("*.py")
                     if "__pycache__" not in p.parts)
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules not in {wheel.name}: {missing}"


def test_installed_wheel_builds(wheel, pow2_onnx, tmp_path):
    """The wheel, installed on its own, finds its data in edgekit/_data and compiles a model."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = {"PYTHONPATH": str(site)}  # ahead of the editable install of the checkout
    where = subprocess.run([sys.executable, "-c", "import edgekit, edgekit.resources as r; "
                            "print(edgekit.__file__); print(r.resource_dir('templates'))"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert where.returncode == 0, where.stderr
    pkg_file, templates = where.stdout.split()
    assert Path(pkg_file).is_relative_to(site), pkg_file
    assert Path(templates) == site / "edgekit" / "_data" / "templates"
    ok(run_cli("build", pow2_onnx, *TARGET, "-o", tmp_path / "out", cwd=tmp_path, env=env))
    assert (tmp_path / "out" / "firmware.elf").is_file()
