"""``edgekit bench sim`` runs on one tiny model and prints its ratio and breakdown (no timing asserts:
a benchmark's times depend on the machine)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

EDGEKIT = [sys.executable, "-m", "edgekit"]


def run(*args, timeout=600):
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_bench_sim_on_a_tiny_qonnx_model(pow2_onnx):
    proc = run("bench", "sim", "--models", pow2_onnx, "--batch", 8)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(pow2_onnx.name))
    assert "qonnx execute_onnx" in row and row.rstrip().endswith("equal")  # power-of-two scales: exact
    assert float(re.search(r"(\d+\.\d)x  ", row).group(1)) > 0  # the ratio column
    assert "where the simulator's time goes" in proc.stdout and "dense" in proc.stdout.split("goes")[1]


def test_bench_sim_json(pow2_onnx):
    proc = run("bench", "sim", "--models", pow2_onnx, "--batch", 4, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["batch"] == 4 and row["frontend"] == "qonnx" and row["reference"] == "qonnx execute_onnx"
    assert row["mismatches"] == 0 and row["elements"] > 0 and row["exact_expected"]
    assert row["ratio"] > 0 and row["sim_ms"] > 0 and row["reference_ms"] > 0
    assert set(row["sim_ms_by_op"]) >= {"dense"} and row["slowest_layers"]


def test_bench_sim_refuses_unknown_models_and_batches(tmp_path):
    proc = run("bench", "sim", "--models", "no-such-model")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model 'no-such-model'")
    proc = run("bench", "sim", "--models", tmp_path / "missing.onnx")
    assert proc.returncode == 2 and "missing.onnx: no such model file" in proc.stderr
    proc = run("bench", "sim", "--batch", 0)
    assert proc.returncode == 2 and "--batch 0" in proc.stderr
    assert "Traceback" not in proc.stderr
