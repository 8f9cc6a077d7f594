"""FPGA backend (hls4ml): precisions from edgekit's IR, bit-exact C-simulation, estimates, errors.

The C-simulation is hls4ml's own g++ build of the generated HLS C++ (no vendor tools);
``verify`` compares its outputs with edgekit's simulator element by element.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, \
    Uint8ActPerTensorFixedPoint
from torch import nn

from edgekit.api import build, verify
from edgekit.errors import TargetError, UnsupportedOpError
from edgekit.qat import export_qonnx
from helpers.brevitas_models import Residual, Seq, make_mlp, qconv1d, qid
from helpers.calibration import calibrate

hls4ml = pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C-simulation needs g++")

JET = dict(input_shape=(16,), hidden=(64, 32, 32), n_out=5)  # the hls4ml jet-tagging MLP: 16-64-32-32-5


class HarCNN1D(nn.Module):
    """A HAR 1D-CNN: 6 sensor channels x 128 samples (2.56 s at 50 Hz) -> 6 activities.

    conv(6->8, k5) -> ReLU -> maxpool 2 -> conv(8->16, k5) -> ReLU -> maxpool 2 -> linear(512->6).
    """

    def __init__(self):
        super().__init__()
        u, w = Uint8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint
        self.inp = qid()
        self.c1 = qconv1d(6, 8, 5, padding=2)
        self.r1 = qnn.QuantReLU(act_quant=u, return_quant_tensor=True)
        self.c2 = qconv1d(8, 16, 5, padding=2)
        self.r2 = qnn.QuantReLU(act_quant=u, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(16 * 32, 6, weight_quant=w, bias_quant=Int32Bias, return_quant_tensor=True)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        x = nn.functional.max_pool1d(self.r1(self.c1(self.inp(x))), 2)
        x = nn.functional.max_pool1d(self.r2(self.c2(x)), 2)
        return self.out(self.fc(torch.flatten(x, 1)))


def _calibrated(model: nn.Module, shape, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return calibrate(model, shape, passes=8, batch=32, spread=1.5)


@pytest.fixture(scope="module")
def jet_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hls_models") / "jet_int8_pow2.onnx"
    return export_qonnx(make_mlp("int8-pow2", **JET), torch.zeros(1, 16), path)


@pytest.fixture(scope="module")
def jet_build(jet_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hls_builds") / "jet"
    build(jet_onnx, "fpga", "pynq-z2", out, backend="vitis")
    return out


def _stage(rep, prefix):
    return next(s for s in rep.stages if s.stage.startswith(prefix))


# ---------------------------------------------------------------------------------------
# Bit-exactness with the simulator
# ---------------------------------------------------------------------------------------
def test_cli_build_and_verify_jet_mlp_bit_exact(jet_onnx, tmp_path):
    """The user's commands: build --target fpga --backend vitis, then verify (hls4ml C-sim == simulator)."""
    out = tmp_path / "out_fpga"
    cmd = [sys.executable, "-m", "edgekit"]
    b = subprocess.run([*cmd, "build", str(jet_onnx), "--target", "fpga", "--board", "pynq-z2", "--backend", "vitis",
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    # fully parallel, the jet MLP's LUT multipliers overfill a Zynq 7020 (estimate): exit 1 naming the
    # smallest reuse factor that fits; the build stays for report/export/verify
    assert b.returncode == 1, b.stdout + b.stderr
    assert "Traceback" not in b.stdout + b.stderr
    assert b.stderr.count("\n") == 1 and b.stderr.startswith(f"error: {out} does not fit xc7z020clg400-1"), b.stderr
    assert "rebuild with --reuse-factor 8" in b.stderr and "--allow-overfit" in b.stderr
    assert json.loads((out / "estimates.json").read_text())["smallest_fitting_reuse_factor"] == 8
    for word in ("xc7z020clg400-1", "BOPs", "DSP", "LUT", "cycles", "fixed<8,", "DOES NOT FIT"):
        assert word in b.stdout, b.stdout
    # --allow-overfit accepts it; the board fixes the target; --json prints the manifest
    b = subprocess.run([*cmd, "build", str(jet_onnx), "--board", "pynq-z2", "--allow-overfit", "--json", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert b.returncode == 0 and b.stderr == "", b.stderr
    doc = json.loads(b.stdout)
    assert doc["fits"] is False and doc["manifest"]["target"] == "fpga" and doc["manifest"]["part"] == "xc7z020clg400-1"
    project = out / "hls"
    for f in ("firmware/edgekit_model.cpp", "firmware/defines.h", "firmware/parameters.h", "build_prj.tcl",
              "project.tcl", "build_lib.sh", "tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"):
        assert (project / f).is_file(), f
    assert 'set part "xc7z020clg400-1"' in (project / "project.tcl").read_text()
    assert "AP_RND_CONV,AP_SAT" in (project / "firmware" / "defines.h").read_text()

    v = subprocess.run([*cmd, "verify", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr
    rep = json.loads(v.stdout)
    stages = {s["stage"].split(" ")[0]: s for s in rep["stages"]}
    assert set(stages) == {"simulator", "qonnx", "hls4ml"}
    csim = stages["hls4ml"]
    assert csim["must_be_exact"] and csim["mismatches"] == 0 and csim["elements"] == 256 * 5, csim
    assert stages["qonnx"]["mismatches"] == 0
    assert rep["ok"]


def test_har_cnn1d_bit_exact_vivado_stream(tmp_path):
    """The HAR 1D-CNN (Conv1D + 1D max pooling + dense) through Vivado io_stream, bit for bit."""
    onnx = export_qonnx(_calibrated(HarCNN1D(), (6, 128)), torch.zeros(1, 6, 128), tmp_path / "har_cnn.onnx")
    res = build(onnx, "fpga", "zcu104", tmp_path / "b", backend="vivado", io_type="io_stream")
    m = res.manifest
    assert m.hls["backend"] == "Vivado" and m.hls["io_type"] == "io_stream"
    assert [lp["hls_layer"].split("_")[0] for lp in m.precision["layers"]] == ["Conv1D", "Conv1D", "Dense"]
    rep = verify(tmp_path / "b", count=64, seed=3)
    csim = _stage(rep, "hls4ml")
    assert csim.must_be_exact and csim.mismatches == 0, rep.table()
    assert rep.ok


def test_verify_fails_on_a_one_lsb_rounding_change(jet_build, tmp_path):
    """Truncating instead of rounding half to even at the output (1 LSB) makes verify fail."""
    tampered = tmp_path / "tampered"
    shutil.copytree(jet_build, tampered)
    defines = tampered / "hls" / "firmware" / "defines.h"
    text = defines.read_text()
    out_t = json.loads((tampered / "manifest.json").read_text())["precision"]["output"]  # e.g. fixed<8,0,RND_CONV,SAT>
    width, integer = out_t[out_t.index("<") + 1:].split(",")[:2]
    old = f"ap_fixed<{width},{integer},AP_RND_CONV,AP_SAT,0> result_t;"
    assert old in text, text
    defines.write_text(text.replace(old, f"ap_fixed<{width},{integer},AP_TRN,AP_SAT,0> result_t;"))
    rep = verify(tampered, count=64, seed=1)
    csim = _stage(rep, "hls4ml")
    assert csim.must_be_exact and csim.mismatches > 0 and csim.max_lsb == 1, rep.table()
    assert not rep.ok and "FAIL" in rep.table()


def test_float_scale_difference_is_reported_not_hidden(float_onnx, tmp_path):
    build(float_onnx, "fpga", "zcu104", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert not m["precision"]["exact"] and "scale" in m["precision"]["reason"]
    rep = verify(tmp_path / "b", count=128, seed=0)
    csim = _stage(rep, "hls4ml")
    assert not csim.must_be_exact and "float scales" in csim.note
    assert csim.max_lsb <= 2, rep.table()  # close: an LSB here and there, never a wrong scale
    assert rep.ok  # reported, not a failure
    assert "differs (reported)" in rep.table() or csim.mismatches == 0


# ---------------------------------------------------------------------------------------
# Precisions and estimates (conversion only, no compilation)
# ---------------------------------------------------------------------------------------
def test_precisions_come_from_the_integer_analysis(jet_build):
    from edgekit.backends.hls.precision import bits_for
    from edgekit.ir import contract
    from edgekit.ir.graph import Graph

    m = json.loads((jet_build / "manifest.json").read_text())
    p = m["precision"]
    assert p["exact"]
    g = Graph.load(jet_build)
    iq = g.input_quant
    e = int(np.log2(iq.scale))
    assert p["input"] == f"fixed<8,{8 + e},RND_CONV,SAT>"  # the input quantizer's grid and range
    dense = [n for n in g.nodes if n.op == "dense"]
    assert [lp["ir_node"] for lp in p["layers"]] == [n.name for n in dense]
    for node, lp in zip(dense, p["layers"]):
        x, w = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
        bound = contract.accumulator_bound(g.constants[node.inputs[1]], g.constants[node.inputs[2]], x.qmin, x.qmax)
        assert lp["accum_bound"] == int(bound.max())
        width = bits_for(int(bound.max()))
        lsb = int(np.log2(x.scale[0])) + int(np.log2(w.scale[0]))
        assert lp["accum"] == f"fixed<{width},{width + lsb}>"
        assert width < 33  # hls4ml's own inference: 8 + 8 + log2(n_in) widened by the 32-bit bias -> 33 bits
        assert lp["weight"].startswith(f"fixed<{w.bits},{w.bits + int(np.log2(w.scale[0]))},RND_CONV,SAT")
        out = g.tensors[node.outputs[0]]
        assert lp["result"].startswith("ufixed" if not out.signed else "fixed")
        assert lp["result"].endswith(",RND_CONV,SAT>")
        assert m["hls_types"][lp["hls_layer"]]["accum_t"] == lp["accum"]  # what hls4ml will emit


def test_tight_precisions_cut_bops_by_at_least_30_percent(jet_build):
    """BOPs = MACs x weight bits x input bits, read from the converted hls4ml models' types."""
    est = json.loads((jet_build / "estimates.json").read_text())
    default = est["baselines"]["default"]
    auto = est["baselines"]["qonnx-auto"]
    assert est["totals"]["macs"] == 16 * 64 + 64 * 32 + 32 * 32 + 32 * 5
    assert default["bops"] == est["totals"]["macs"] * 16 * 16  # hls4ml's default fixed<16,6> everywhere
    assert est["totals"]["bops"] == est["totals"]["macs"] * 8 * 8
    assert default["bops_reduction_percent"] >= 30  # 75 %
    # hls4ml's own QONNX inference reads the same quantizers: same multipliers, wider accumulators
    assert auto["bops"] == est["totals"]["bops"]
    assert auto["accum_bitops_reduction_percent"] > 20
    assert all(r["accum_bits"] == 33 for r in auto["layers"])


def test_estimates_reuse_factor_and_fit(jet_onnx, jet_build, tmp_path):
    est1 = json.loads((jet_build / "estimates.json").read_text())
    assert est1["latency"]["cycles"] == 15 and est1["latency"]["initiation_interval"] == 1
    assert est1["totals"]["dsp"] == 0 and all(r["multiplier_on"] == "LUT" for r in est1["layers"])  # 8 x 8 bits
    assert est1["part"] == "xc7z020clg400-1" and est1["part_resources"]["dsp"] == 220
    assert est1["fits"] is False  # 4k fully parallel LUT multipliers do not fit a Zynq 7020
    res = build(jet_onnx, "fpga", "alveo-u250", tmp_path / "rf8", reuse_factor=8)
    est8 = json.loads((res.out_dir / "estimates.json").read_text())
    assert res.manifest.hls["strategy"] == "Resource"
    assert all(r["reuse_factor"] == 8 for r in est8["layers"])
    assert est8["totals"]["multipliers"] == sum(-(-r["weights"] // 8) for r in est8["layers"])
    assert est8["totals"]["lut"] < est1["totals"]["lut"] / 4
    assert est8["latency"]["initiation_interval"] == 8 and est8["latency"]["cycles"] > est1["latency"]["cycles"]
    assert est8["fits"] is True and est8["part"] == "xcu250-figd2104-2L-e"
    assert est8["smallest_fitting_reuse_factor"] == 1  # the U250 holds it fully parallel
    # the suggestion for the Zynq 7020 is exact for the estimator: at 8 it fits, at the valid factor below it does not
    assert est1["smallest_fitting_reuse_factor"] == 8
    fit8 = json.loads((build(jet_onnx, "fpga", "pynq-z2", tmp_path / "z8", reuse_factor=8).out_dir
                       / "estimates.json").read_text())
    fit4 = json.loads((build(jet_onnx, "fpga", "pynq-z2", tmp_path / "z4", reuse_factor=4).out_dir
                       / "estimates.json").read_text())
    assert fit8["fits"] is True and fit4["fits"] is False


def test_boards():
    from edgekit.backends.hls.boards import get_fpga_board, list_fpga_boards

    assert {"pynq-z2", "zcu104", "alveo-u250"} <= set(list_fpga_boards())
    parts = {b: get_fpga_board(b).part for b in ("pynq-z2", "zcu104", "alveo-u250")}
    assert parts == {"pynq-z2": "xc7z020clg400-1", "zcu104": "xczu7ev-ffvc1156-2-e",
                     "alveo-u250": "xcu250-figd2104-2L-e"}
    z = get_fpga_board("zcu104").resources
    assert (z["lut"], z["ff"], z["dsp"], z["bram18"]) == (230_400, 460_800, 1_728, 624)
    with pytest.raises(TargetError, match="unknown FPGA board 'nope'.*pynq-z2"):
        get_fpga_board("nope")


# ---------------------------------------------------------------------------------------
# What hls4ml cannot take: a clear error naming the node, and no output directory
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, factory, shape, match", [
    ("trunc", lambda: Seq(qnn.TruncAvgPool2d(2, return_quant_tensor=True)), (3, 8, 8), r"\(Trunc.*no Trunc layer"),
    ("avgpool1d", lambda: Seq(nn.AvgPool1d(4)), (3, 16), r"\(AveragePool.*1D average pooling"),
    # a fork into a residual add of convolutions: hls4ml's QONNX path refuses the fork and edgekit's
    # integer-IR path (which takes forks of dense layers, tests/test_hls_residual.py) has no convolutions
    ("fork", Residual, (4, 6, 6), r"\(Quant.*feeds 2 consumers.*integer IR.*conv2d"),
], ids=["trunc", "avgpool1d", "fork"])
def test_unsupported_patterns_name_the_node(name, factory, shape, match, tmp_path):
    onnx = export_qonnx(_calibrated(factory(), shape), torch.zeros(1, *shape), tmp_path / f"{name}.onnx")
    out = tmp_path / "b"
    with pytest.raises(UnsupportedOpError, match=match) as e:
        build(onnx, "fpga", "zcu104", out)
    assert "node '" in str(e.value)
    assert not out.exists()


def test_option_errors(jet_onnx, tmp_path):
    with pytest.raises(TargetError, match="apply to --target fpga only"):
        build(jet_onnx, "cortex-m4", "mps2-an386", tmp_path / "a", backend="vitis")
    with pytest.raises(TargetError, match="reuse factor"):
        build(jet_onnx, "fpga", "zcu104", tmp_path / "b", reuse_factor=0)
    with pytest.raises(TargetError, match="unknown FPGA board"):
        build(jet_onnx, "fpga", "mps2-an386", tmp_path / "c")
    proc = subprocess.run([sys.executable, "-m", "edgekit", "build", str(jet_onnx), "--target", "fpga", "-o",
                           str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no --board given; FPGA boards:"), proc.stderr
    assert not any((tmp_path / d).exists() for d in "abcd")


# ---------------------------------------------------------------------------------------
# report, export, profile and flash on an FPGA build directory
# ---------------------------------------------------------------------------------------
def _cli(capsys, *args) -> tuple[int, str, str]:
    from edgekit.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_on_an_fpga_build(jet_build, capsys):
    code, out, err = _cli(capsys, "report", jet_build)
    assert code == 0 and err == "", err
    assert "fpga on pynq-z2 (xc7z020clg400-1)" in out and "precisions from edgekit's integer analysis" in out
    est = json.loads((jet_build / "estimates.json").read_text())
    for r in est["layers"]:  # the per-layer estimates, one row per hls4ml layer
        assert any(line.startswith(r["layer"]) and str(r["bops"]) in line for line in out.splitlines()), r["layer"]
    code, out, _ = _cli(capsys, "report", jet_build, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["backend"] == "hls" and rep["part"] == "xc7z020clg400-1"
    assert rep["estimates"] == est and rep["precision"]["exact"] is True and rep["bops"] == est["totals"]["bops"]


def test_export_an_fpga_build_runs_its_c_simulation_elsewhere(jet_build, tmp_path, capsys):
    dest = tmp_path / "project"
    code, out, err = _cli(capsys, "export", jet_build, "-o", dest)
    assert code == 0 and err == "", err
    assert "vitis_hls -f build_prj.tcl" in out and "build_lib.sh" in out
    for f in ("firmware/edgekit_model.cpp", "firmware/defines.h", "build_prj.tcl", "build_lib.sh", "hls_model.onnx",
              "tb_data/tb_input_features.dat", "README.md", "edgekit-export.json"):
        assert (dest / f).is_file(), f
    assert "OnnxModel: hls_model.onnx" in (dest / "hls4ml_config.yml").read_text()
    # the exported folder alone (the build directory moved away) compiles and reproduces the test bench
    shutil.move(jet_build, tmp_path / "moved")
    try:
        x = np.loadtxt(dest / "tb_data" / "tb_input_features.dat", ndmin=2)
        want = np.loadtxt(dest / "tb_data" / "tb_output_predictions.dat", ndmin=2)
        np.save(tmp_path / "in.npy", x)
        proc = subprocess.run([sys.executable, "-m", "edgekit.backends.hls._csim", str(dest), str(tmp_path / "in.npy"),
                               str(tmp_path / "out.npy")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert np.allclose(np.load(tmp_path / "out.npy").reshape(want.shape), want, rtol=0, atol=1e-6)
    finally:
        shutil.move(tmp_path / "moved", jet_build)
    # a second export replaces the first; a foreign folder is refused
    assert _cli(capsys, "export", jet_build, "-o", dest)[0] == 0
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    code, _, err = _cli(capsys, "export", jet_build, "-o", tmp_path / "foreign")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("command, says", [
    (["profile"], "profile counts Cortex-M instructions on QEMU"),
    (["flash"], "flash runs firmware on a microcontroller board"),
], ids=["profile", "flash"])
def test_cortexm_only_commands_refuse_an_fpga_build_in_one_line(jet_build, capsys, command, says):
    code, out, err = _cli(capsys, *command, jet_build)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {says}; {jet_build} is an FPGA (hls4ml) build: "), err
    assert "internal error" not in err


def test_verify_stages_and_timeout_of_an_fpga_build(jet_build):
    from edgekit.errors import VerificationError

    with pytest.raises(VerificationError, match=r"no stage 'qemu' for an FPGA \(hls4ml\) build; its stages: "
                                                r"qonnx, csim"):
        verify(jet_build, skip=("qemu",))
    rep = verify(jet_build, count=4, skip=("csim",))  # simulator and qonnx only: no C-simulation
    assert [s.stage for s in rep.stages] == ["simulator", "qonnx (float32)"] and rep.ok
    assert rep.memory["csim_compile_seconds"] is None and "C-simulation not run" in rep.table()
    with pytest.raises(VerificationError, match="positive number of seconds"):
        verify(jet_build, timeout=0)
