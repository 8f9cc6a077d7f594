"""Architecture search (edgekit nas): space, cost model, Pareto front, and end-to-end searches.

The end-to-end test runs a real, tiny search through the CLI: a few trials on a small
subset of the HAR windows with one epoch each, a small latency calibration on QEMU, the
checks of the returned model (build for the NUCLEO-L4R5ZI, bit-exact verification on the
emulated Cortex-M4 mps2-an386, profile) and the export of the best model.
"""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="edgekit[nas] not installed")  # setup.sh installs it for make test

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.nas import cost as nascost  # noqa: E402
from edgekit.nas.config import Budget, parse_latency, parse_size  # noqa: E402
from edgekit.nas.trials import nearest_infeasible, pareto_front  # noqa: E402
from edgekit.nas.space import ArchSpec, Block, SpaceConfig, build_model, estimate_macs, random_arch  # noqa: E402


def synthetic_cost_model(core: str = "cortex-m4") -> nascost.CostModel:
    """A cost model with hand-set coefficients (for tests of the search machinery only)."""
    coef = {}
    for target, scale in (("instructions", 1.0), ("cycles", 1.6)):
        table = {}
        for kind, names in nascost.KIND_FEATURES.items():
            per = {"macs": 6.0, "taps": 4.0, "outputs": 12.0, "win_iters": 3.0, "const": 40.0, "layers": 4.0}
            table[kind] = [scale * per.get(n, 0.0) for n in names]
        coef[target] = table
    return nascost.CostModel(core, "synthetic", coef, {"n_fit": 0, "synthetic": True})


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------
def test_parse_budgets():
    assert parse_size("64KB") == parse_size("64KiB") == parse_size("64k") == 65536
    assert parse_size("1MB") == 1 << 20 and parse_size("4096") == 4096
    assert parse_latency("20ms") == 20.0 and parse_latency("0.5s") == 500.0 and parse_latency("800us") == 0.8
    with pytest.raises(EdgekitError):
        parse_size("lots")
    b = Budget(65536, None, 20.0)
    assert b.violations(32768, 10**9, 30.0) == [-0.5, -1.0, 0.5]


def test_space_archs_build_and_count_macs():
    rng = np.random.default_rng(3)
    space = SpaceConfig()
    for _ in range(20):
        a = random_arch(rng, space, (128, 6), 6)
        assert a.valid() is None
        assert ArchSpec.from_json(json.loads(json.dumps(a.to_json()))) == a
    a = ArchSpec(2, (Block("conv", 8, 5, 2, "max", 4, 2), Block("dwsep", 16, 3, 1, "avg", 2, 8)), (128, 6), 6, 16)
    model = build_model(a)
    import torch

    assert model(torch.randn(3, 128, 6)).shape == (3, 6)
    assert estimate_macs(a) > 0
    assert ArchSpec(1, (Block("conv", 8, 9, 2, "max"),) * 8, (16, 6), 6).valid() is not None


def test_cost_model_fit_recovers_linear_counts():
    """Least squares on exactly linear synthetic counts recovers them (and extrapolates)."""
    rng = np.random.default_rng(0)
    true = {"macs": 5.0, "taps": 7.0, "outputs": 11.0, "const": 60.0}

    def layer(ih, ic, oc, k):
        info = {"name": f"c{ih}_{ic}_{oc}_{k}", "op": "conv2d", "in": [1, ih, ic], "out": [1, ih, oc],
                "kernel": [1, k], "stride": [1, 1], "pad": [0, k // 2, 0, k // 2], "depthwise": False, "wbits": 8,
                "inplace": False, "variant": "reference"}
        _, f = nascost.features(info)
        n = sum(true.get(k_, 0) * v for k_, v in f.items())
        return {"info": info, "instructions": n, "cycles": 2 * n}

    samples = []
    for i in range(30):
        layers = [layer(int(rng.integers(8, 128)), int(rng.integers(1, 64)), int(rng.integers(1, 64)),
                        int(rng.choice([1, 3, 5, 7]))) for _ in range(3)]
        tot = sum(x["instructions"] for x in layers) + 20 + 3 * len(layers)
        samples.append({"arch": str(i), "layers": layers, "glue": {"instructions": 20 + 3 * len(layers),
                                                                   "cycles": 2 * (20 + 3 * len(layers)),
                                                                   "layers": len(layers)},
                        "instructions": tot, "cycles": 2 * tot})
    model = nascost.fit(samples[:20], "cortex-m4", "k")
    ev = nascost.evaluate(model, samples[20:])
    assert ev["instructions_max_abs"] < 1e-6 and ev["cycles_max_abs"] < 1e-6
    # a kind the calibration never saw falls back along its chain, then fails clearly
    assert model.layer_cost("instructions", ["conv.w4.inplace", "conv.w4", "conv"], {"macs": 1, "const": 1}) > 0
    with pytest.raises(EdgekitError):
        model.layer_cost("instructions", ["dense.w8", "dense"], {"macs": 1})


#: Search-space architectures whose cost features are pinned: 1D and 2D, conv and depthwise-
#: separable blocks of 3, 5 and 7 taps, strides 1 and 2, max/avg pooling, 2/4/8-bit weights,
#: hidden dense heads; built for the Cortex-M3 (reference kernels), M4 (DSP) and M55 (Helium).
PINNED_ARCHS = [
    ArchSpec(1, (Block("conv", 8, 5, 2, "max"), Block("dwsep", 16, 3, 1, "avg"),
                 Block("dwsep", 12, 5, 1, "none", 4, 8)), (64, 6), 6, 16),
    ArchSpec(2, (Block("conv", 8, 3, 1, "max", 4, 4), Block("dwsep", 8, 3, 2, "avg"),
                 Block("conv", 6, 1, 1, "none", 2, 8)), (32, 6), 5, 0),
    ArchSpec(1, (Block("conv", 4, 3, 1, "none"), Block("dwsep", 8, 7, 2, "max")), (48, 3), 3, 8, 4),
]
PINNED_CORES = [("cortex-m3", "mps2-an385"), ("cortex-m4", "mps2-an386"), ("cortex-m55", "mps3-an547")]
PINNED = Path(__file__).parent / "data" / "cost_features_expected.json"


def test_cost_features_are_pinned(tmp_path):
    """The latency model's features, kind chains and work terms of every layer, computed from
    the kernel variants the builds chose, equal those the cost model computed before the kernel
    variants became a registry (tests/data/cost_features_expected.json, written by that code):
    a fitted model keeps its meaning. Also the MLPerf Tiny KWS and AD models when the peers
    folder is there."""
    import torch

    from edgekit.api import build
    from edgekit.bench import peers_dir
    from edgekit.ir.graph import Graph
    from edgekit.nas.train import calibrate_activations
    from edgekit.qat import export_qonnx

    expected = json.loads(PINNED.read_text())
    got = {}
    for ai, arch in enumerate(PINNED_ARCHS):
        torch.manual_seed(ai)
        model = build_model(arch)
        calibrate_activations(model, torch.randn(64, *arch.input_shape, generator=torch.Generator().manual_seed(ai)))
        onnx = export_qonnx(model, torch.zeros(1, *arch.input_shape), tmp_path / f"arch{ai}.onnx")
        for core, board in PINNED_CORES:
            # --optimize speed: the int16-weight variants the features were pinned with (before the
            # int8-weight variants existed and became the default)
            res = build(onnx, core, board, tmp_path / f"b{ai}-{core}", optimize="speed")
            got[f"{arch.describe()}|{core}"] = nascost.layer_features(Graph.load(res.out_dir), res.manifest)
    mlperf = (peers_dir() or tmp_path) / "mlperf_tiny"
    for stem in ("kws_ref_model", "ad01_int8"):
        if not (mlperf / f"{stem}.tflite").is_file():
            continue
        for core, board in PINNED_CORES[1:]:
            res = build(mlperf / f"{stem}.tflite", core, board, tmp_path / f"{stem}-{core}", optimize="speed")
            got[f"{stem}|{core}"] = nascost.layer_features(Graph.load(res.out_dir), res.manifest)
    assert len(got) >= 9
    for key, layers in got.items():
        assert json.loads(json.dumps([[n, c, f] for n, c, f in layers])) == expected[key], key


def _row(n, acc, lat, ram, feasible=True, cons=None):
    return {"number": n, "val_accuracy": acc, "latency_ms": lat, "ram_bytes": ram, "feasible": feasible,
            "constraints": cons if cons is not None else [-0.5, -0.5, -0.5], "trained": True}


def test_pareto_front_and_nearest():
    rows = [_row(0, 0.90, 10, 1000), _row(1, 0.85, 5, 1000), _row(2, 0.80, 12, 2000), _row(3, 0.95, 30, 900),
            _row(4, 0.99, 1, 1, feasible=False, cons=[0.2, -1, -1]), _row(5, 0.0, 2, 2, False, [3.0, -1, 1.0])]
    front = pareto_front(rows)
    assert [r["number"] for r in front] == [3, 0, 1]  # 2 is dominated by 0; 4 and 5 are infeasible
    assert [r["number"] for r in nearest_infeasible(rows, 2)][0] in (0, 1, 2, 3)
    assert [r["number"] for r in nearest_infeasible([rows[4], rows[5]], 2)] == [4, 5]


# ---------------------------------------------------------------------------------------
# The latency model against the emulator
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m55"])
def test_cost_model_calibration_on_qemu(core, tmp_path, monkeypatch):
    """A small calibration on the core's QEMU board measures exact counts and predicts held-out
    architectures (loose bound: the note's numbers come from the default 40-architecture fit).
    On the Cortex-M55 the Helium kernels get their own features."""
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    small = SpaceConfig(dims=(1,), depth=(1, 2), channels=(4, 8, 16), kernels=(3, 5))
    m = nascost.calibrate(core, (64, 6), 6, space=small, n_fit=10, n_holdout=3, seed=5, progress=None)
    if core == "cortex-m55":
        assert {"mve_gemm", "mve_dense"} <= set(m.stats["kinds"]), m.stats["kinds"]
    h = m.stats["holdout"]
    assert h["n"] >= 2 and m.stats["n_fit"] >= 8
    assert h["instructions_max_abs"] < 0.35, h
    for s in m.stats["samples"]["fit"]:
        assert sum(layer["instructions"] for layer in s["layers"]) + s["glue"]["instructions"] == s["instructions"]


# ---------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
    out = tmp_path / "nas_out"
    r = run_cli("nas", "--board", "nucleo-l4r5zi", "--max-ram", "64KB", "--max-flash", "256KB",
                "--max-latency", "20ms", "--dataset", "har", "--trials", "3", "--train-subset", "192",
                "--epochs", "1", "--dims", "1", "--max-depth", "2", "--channels", "4,8", "--calibration", "6",
                "--verify-top", "1", "-o", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[  3/3]" in r.stdout and "best: trial" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["feasible"] and s["trials"]["finished"] == 3
    best = s["best"]
    assert best["ok"] and best["verify"]["real_ok"] and best["verify"]["generated_ok"]
    assert best["emulated_board"] == "mps2-an386"
    assert best["ram_bytes"] <= 65536 and best["flash_bytes"] <= 262144 and best["measured_latency_ms"] <= 20
    m = json.loads((out / "best" / "manifest.json").read_text())
    assert m["board"] == "nucleo-l4r5zi" and m["fit"]["fits"] and (out / "best" / "firmware.elf").is_file()
    assert json.loads((out / "best-mps2-an386" / "manifest.json").read_text())["board"] == "mps2-an386"
    assert (out / "best" / "profile.json").is_file()
    for f in ("report.md", "report.html", "trials.csv", "trials.json", "cost_model.json", "study.db"):
        assert (out / f).is_file(), f
    ET.fromstring((out / "pareto.svg").read_text())  # well-formed SVG
    # the study is resumable: asking for the same 3 trials runs none and reports again
    r2 = run_cli("nas", "--board", "nucleo-l4r5zi", "--max-ram", "64KB", "--max-flash", "256KB",
                 "--max-latency", "20ms", "--dataset", "har", "--trials", "3", "--train-subset", "192",
                 "--epochs", "1", "--dims", "1", "--max-depth", "2", "--channels", "4,8", "--verify-top", "1",
                 "--no-export", "-o", str(out))
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "resuming: 3 trials" in r2.stdout
    # other settings for the same study are refused, not mixed in
    r3 = run_cli("nas", "--board", "nucleo-l4r5zi", "--max-ram", "32KB", "--trials", "3", "--dims", "1",
                 "--max-depth", "2", "--channels", "4,8", "--train-subset", "192", "--epochs", "1", "-o", str(out))
    assert r3.returncode == 2 and "other settings" in r3.stderr


def test_impossible_budget_reports_nearest(tmp_path):
    """No model can have 4 KiB of RAM (the reserved stack alone is 8 KiB): the search ends
    with a report that says so and lists the nearest trials, exit status 1, no crash."""
    cm = tmp_path / "cost.json"
    synthetic_cost_model().save(cm)
    out = tmp_path / "nas_out"
    r = run_cli("nas", "--board", "nucleo-l4r5zi", "--max-ram", "4KB", "--max-latency", "20ms", "--trials", "3",
                "--dims", "1", "--max-depth", "1", "--channels", "4,8", "--cost-model", str(cm), "-o", str(out))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "NO FEASIBLE MODEL" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert not s["feasible"] and s["best"] is None and s["trials"]["trained"] == 0
    assert s["nearest"] and all(n["constraints"][0] > 0 for n in s["nearest"])
    assert "No feasible model" in (out / "report.md").read_text()
    assert not (out / "best").exists()


def test_ts_reader_and_basicmotions_location(tmp_path, monkeypatch):
    """BasicMotions comes as UEA .ts files (inside sktime/aeon, or $EDGEKIT_BASICMOTIONS)."""
    from edgekit.nas import datasets

    rng = np.random.default_rng(0)
    header = "@problemName BasicMotions\n@dimensions 2\n@seriesLength 5\n@classLabel true A B\n@data\n"
    for split, n in (("TRAIN", 8), ("TEST", 4)):
        lines = []
        for i in range(n):
            dims = [",".join(f"{v:.3f}" for v in rng.normal(size=5)) for _ in range(2)]
            lines.append(":".join(dims) + (":A" if i % 2 else ":B"))
        (tmp_path / f"BasicMotions_{split}.ts").write_text("# comment\n" + header + "\n".join(lines) + "\n")
    x, y = datasets.read_ts(tmp_path / "BasicMotions_TRAIN.ts")
    assert x.shape == (8, 5, 2) and list(y[:2]) == ["B", "A"]
    monkeypatch.setenv("EDGEKIT_BASICMOTIONS", str(tmp_path))
    d = datasets.load("basicmotions")
    assert d.n_classes == 2 and d.input_shape == (5, 2) and len(d.x_val) == 2 and len(d.x_test) == 4


# ---------------------------------------------------------------------------------------
# Honesty: training defaults from the data's size, the chance level, the calibration cache
# ---------------------------------------------------------------------------------------
def test_training_defaults_follow_the_training_set_size():
    from edgekit.nas.config import NasConfig, resolve_training, training_defaults

    # BasicMotions: 32 training series -> 4 steps an epoch at batch 8, 30 epochs for 120 steps
    assert training_defaults(32) == {"batch": 8, "max_epochs": 30, "patience": 6}
    # HAR: 6,362 windows -> unchanged from the fixed defaults it was tuned with
    assert training_defaults(6362) == {"batch": 64, "max_epochs": 6, "patience": 2}
    assert training_defaults(192) == {"batch": 24, "max_epochs": 15, "patience": 3}
    assert training_defaults(3) == {"batch": 8, "max_epochs": 60, "patience": 12}  # capped
    config = NasConfig(board="nucleo-l4r5zi", target="cortex-m4", budget=Budget(), batch=16)
    assert resolve_training(config, 32) == ["max_epochs", "patience"]  # an explicit batch wins
    assert (config.batch, config.max_epochs, config.patience) == (16, 30, 6)


def test_chance_level_and_margin():
    from edgekit.nas.datasets import chance_levels

    y_val = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    c = chance_levels(y_val, np.array([0] * 7 + [1] * 3), 4)
    assert c["val"] == 0.25 and c["test"] == 0.7 and c["n_val"] == 8
    assert c["margin"] == pytest.approx(3 * np.sqrt(0.25 * 0.75 / 8)) and c["threshold"] == pytest.approx(0.709, abs=1e-3)
    big = chance_levels(np.repeat(np.arange(6), 1000), np.arange(6), 6)  # many samples: the 5-point floor
    assert big["margin"] == 0.05 and big["threshold"] == pytest.approx(1 / 6 + 0.05)


def _write_ts(folder: Path, n_train: int, n_test: int, length: int, channels: int, classes: int, seed: int):
    """UEA .ts files of noise with random labels: nothing to learn."""
    rng = np.random.default_rng(seed)
    labels = "".join(f" c{i}" for i in range(classes))
    header = f"@problemName BasicMotions\n@dimensions {channels}\n@seriesLength {length}\n@classLabel true{labels}\n@data\n"
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        lines = []
        for i in range(n):
            dims = [",".join(f"{v:.3f}" for v in rng.normal(size=length)) for _ in range(channels)]
            lines.append(":".join(dims) + f":c{rng.integers(classes) if split == 'TEST' else i % classes}")
        if split == "TRAIN":  # labels shuffled against the (random) series
            lines = [ln.rsplit(":", 1)[0] + ":" + lab.rsplit(":", 1)[1]
                     for ln, lab in zip(lines, rng.permutation(lines))]
        (folder / f"BasicMotions_{split}.ts").write_text(header + "\n".join(lines) + "\n")


def test_search_that_learns_nothing_exits_1(tmp_path, monkeypatch):
    """Noise with random labels: every trial stays near chance, so the search returns no
    model (exit 1), says so with the chance level and the most accurate trials, exports
    nothing; the study's objectives carry names for optuna-dashboard."""
    data = tmp_path / "noise"
    data.mkdir()
    _write_ts(data, 80, 20, 32, 3, 4, seed=1)
    monkeypatch.setenv("EDGEKIT_BASICMOTIONS", str(data))
    cm = tmp_path / "cost.json"
    synthetic_cost_model().save(cm)
    out = tmp_path / "nas_out"
    r = run_cli("nas", "--board", "nucleo-l4r5zi", "--max-ram", "64KB", "--max-latency", "20ms",
                "--dataset", "basicmotions", "--trials", "2", "--dims", "1", "--max-depth", "1", "--channels", "4,8",
                "--cost-model", str(cm), "-o", str(out))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "NOT BETTER THAN CHANCE" in r.stdout and "most accurate trials:" in r.stdout, r.stdout[-3000:]
    assert "batch 8, at most 15 epochs, patience 3 (batch, max_epochs, patience from the training set's 60" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["below_chance"] and not s["feasible"] and s["best"] is None
    assert s["chance"]["n_val"] == 20 and s["chance"]["threshold"] > s["chance"]["val"] + 0.05
    assert s["trials"]["trained"] >= 1 and s["most_accurate"]
    assert all(c["below_chance"] and not c["ok"] for c in s["checked"])
    assert "chance (majority class)" in s["dataset_description"]
    assert not (out / "best").exists() and not (out / "pareto").exists()
    study = optuna.load_study(study_name="edgekit-nas", storage=f"sqlite:///{out / 'study.db'}")
    assert study.metric_names == ["val_accuracy", "latency_ms", "ram_bytes"]


def test_calibration_is_cached_per_core_and_kernel_set(tmp_path, monkeypatch):
    """A second search on another data set (input shape) and a similar budget reuses the
    calibration; --recalibrate, another MAC-cap bucket, and a changed kernel set do not."""
    monkeypatch.delenv("EDGEKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    runs = []

    def fake_calibrate(core, input_shape, n_classes, **kw):
        runs.append((core, input_shape, kw["max_macs"]))
        m = synthetic_cost_model(core)
        m.key = nascost.calibration_key(core)
        m.stats.update(n_requested=kw["n_fit"], n_fit=kw["n_fit"], input_shape=list(input_shape))
        return m

    monkeypatch.setattr(nascost, "calibrate", fake_calibrate)
    lines = []
    kw = dict(n_fit=6, n_holdout=2, space=SpaceConfig(), progress=lines.append)
    nascost.load_or_calibrate("cortex-m4", (128, 6), 6, max_macs=4_800_000, **kw)
    assert runs == [("cortex-m4", (128, 6), 1 << 23)]  # the cap rounded up to a power of two
    assert list((tmp_path / "xdg" / "edgekit" / "nas").glob("cost-cortex-m4-*.json"))
    m = nascost.load_or_calibrate("cortex-m4", (100, 6), 4, max_macs=5_000_000, **kw)
    assert len(runs) == 1 and m.core == "cortex-m4" and "reused from" in lines[-1]
    nascost.load_or_calibrate("cortex-m4", (100, 6), 4, max_macs=5_000_000, recalibrate=True, **kw)
    assert len(runs) == 2
    nascost.load_or_calibrate("cortex-m4", (100, 6), 4, max_macs=480_000, **kw)  # a 2 ms budget
    assert len(runs) == 3
    nascost.load_or_calibrate("cortex-m4", (100, 6), 4, max_macs=480_000, **{**kw, "n_fit": 12})  # asks for more
    assert len(runs) == 4
    monkeypatch.setattr(nascost, "calibration_key", lambda core: "changedkernels00")
    nascost.load_or_calibrate("cortex-m4", (128, 6), 6, max_macs=4_800_000, **kw)
    assert len(runs) == 5


def test_hawq_bits_fit_a_flash_budget_the_8bit_draw_exceeds(tmp_path):
    """--bits hawq: the sampler draws 8-bit weights; the trial measures each block's flash at
    8/4/2 bits, trains, allocates by Hessian sensitivity within the budget and fine-tunes.
    On the Cortex-M3 (reference kernels: packed weights) the first draw of seed 0 (two 8-channel
    9-tap blocks, a 16-unit hidden layer) needs about 3.6 KiB of flash at 8 bits, so a 3 KiB
    budget forces lower widths, and the built model must fit it."""
    cm = tmp_path / "cost.json"
    synthetic_cost_model("cortex-m3").save(cm)
    out = tmp_path / "nas_out"
    r = run_cli("nas", "--board", "mps2-an385", "--max-flash", "3KB", "--max-ram", "64KB", "--dataset", "har",
                "--trials", "1", "--train-subset", "192", "--epochs", "2", "--dims", "1", "--max-depth", "2",
                "--channels", "8,16", "--bits", "hawq", "--cost-model", str(cm), "--no-export", "-o", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = optuna.load_study(study_name="edgekit-nas", storage=f"sqlite:///{out / 'study.db'}")
    t = study.trials[0]
    ua = t.user_attrs
    assert ua["status"] == "feasible"
    arch = ArchSpec.from_json(ua["arch"])
    bits = [b.w_bits for b in arch.blocks] + [arch.head_bits]
    assert list(ua["hawq"]["bits"].values()) == bits
    assert min(bits) < 8 and set(bits) <= {2, 4, 8}
    assert ua["metrics"]["flash_bytes"] <= 3 * 1024  # the trained, allocated model as built
    assert ua["hawq"]["predicted"]["flash"] <= 3 * 1024
    assert len(ua["hawq"]["traces"]) == 4 and all(tr["stderr"] >= 0 for tr in ua["hawq"]["traces"])
    # the exported arch is what was trained: rebuilding it gives those widths
    from edgekit.qat.hessian import quant_layers, weight_bits
    import torch

    m = build_model(arch)
    assert [weight_bits(q) for _, q in quant_layers(m, torch.zeros(1, 128, 6))] == [bits[0], bits[1], bits[2],
                                                                                     bits[2]]


def test_bits_option_takes_hawq_or_widths(tmp_path):
    r = run_cli("nas", "--board", "mps2-an385", "--max-flash", "3KB", "--bits", "hawk", "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "--bits" in r.stderr and "hawq" in r.stderr
