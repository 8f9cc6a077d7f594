"""resize: QONNX Resize (opset 10+) and Upsample (opset 7-9), nearest, integer factors.

Brevitas ``nn.Upsample`` models run the per-operator matrix (the convolutions around the
resize get DSP and Helium kernels; the resize itself runs its reference kernel everywhere).
Hand-written graphs cover every coordinate transformation and nearest mode, scales and sizes,
``axes`` (opset 18), 1D maps, int16 and uint8 codes, Upsample and Resize-10: each is verified
bit-exact against qonnx (onnxruntime), the host C and the firmware on mps2-an386. The index
tables are also checked against ONNX's reference implementation, and faults of 1 index in
the simulator or the C kernel are caught.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from edgekit.api import build, verify
from edgekit.backends.cortexm import toolchain as tc
from edgekit.backends.cortexm.firmware import compile_firmware
from edgekit.errors import UnsupportedOpError
from edgekit.frontends.qonnx_ops.resize import exact_source, float32_sources
from edgekit.ir.graph import Graph
from edgekit.targets import get_board, get_core

from helpers.brevitas_models import Seq, qconv1d, qconv2d, qid
from helpers.opcheck import ALL_KERNELS, QonnxCase, TfliteCase, check, matrix
from helpers.tflite_layers import conv_layer
from edgekit.frontends.tflite.writer import TfliteBuilder

QONNX = [
    QonnxCase("conv_upsample2x_conv", lambda: Seq(qconv2d(3, 4, 3), qid(), nn.Upsample(scale_factor=2, mode="nearest"),
                                                  qid(), qconv2d(4, 3, 3)), (3, 6, 5), kernels=ALL_KERNELS),
    QonnxCase("upsample_2x3_after_input", lambda: Seq(nn.Upsample(scale_factor=(2, 3), mode="nearest")), (2, 4, 5)),
    QonnxCase("upsample_to_size", lambda: Seq(nn.Upsample(size=(9, 8), mode="nearest")), (3, 3, 4)),
    QonnxCase("conv1d_upsample3x", lambda: Seq(qconv1d(3, 4, 3), qid(), nn.Upsample(scale_factor=3, mode="nearest"),
                                               qid(), qconv1d(4, 2, 3)), (3, 10), kernels=ALL_KERNELS),
]


def _resize_nearest_model(shape: tuple, size: tuple, align_corners: bool = False, half_pixel_centers: bool = False,
                          conv_after: bool = False) -> bytes:
    """RESIZE_NEAREST_NEIGHBOR of an int8 map (the output keeps the input's quantization),
    optionally followed by a 3x3 CONV_2D (which gets the optimized kernels)."""
    b = TfliteBuilder()
    h, w, c = shape
    x = b.act((1,) + shape, 0.05, -3)
    y = b.act((1, *size, c), 0.05, -3)
    b.op("RESIZE_NEAREST_NEIGHBOR", [x, b.tensor((2,), "int32", data=np.array(size, np.int32))], [y],
         "ResizeNearestNeighborOptions", AlignCorners=align_corners, HalfPixelCenters=half_pixel_centers)
    if not conv_after:
        return b.build([x], [y])
    z, *_ = conv_layer(b, np.random.default_rng(5), y, (*size, c), 0.05, 4, 3)
    return b.build([x], [z])


TFLITE = [
    TfliteCase("resize_nearest_2x2", lambda: _resize_nearest_model((4, 5, 3), (8, 10))),
    TfliteCase("resize_nearest_3x2_half_pixel_centers",
               lambda: _resize_nearest_model((3, 4, 2), (9, 8), half_pixel_centers=True)),
    TfliteCase("resize_nearest_3x3_align_corners", lambda: _resize_nearest_model((3, 3, 2), (9, 9), align_corners=True)),
    TfliteCase("resize_nearest_2x_conv", lambda: _resize_nearest_model((4, 4, 3), (8, 8), conv_after=True),
               kernels=ALL_KERNELS),
]


@pytest.mark.parametrize("frontend,variant,case", matrix(
    "resize", QONNX, TFLITE, no_kernel={v: f"resize has no {v} kernel and no other layer of this model gets one"
                                        for v in ("dsp", "helium")}))
def test_resize(frontend, variant, case, tmp_path):
    check(frontend, variant, case, tmp_path, {"resize"})


# ---------------------------------------------------------------------------------------
# Hand-written graphs: x -> Quant -> Resize/Upsample -> Quant
# ---------------------------------------------------------------------------------------
def resize_graph(path: Path, shape: tuple, *, op: str = "Resize", opset: int = 13, scales=None, sizes=None,
                 bits: int = 8, signed: bool = True, scales_attr: bool = False, **attrs) -> Path:
    """A graph of one resize between two Quant nodes of the same grid (scale 2^-4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    for name, src in (("in_q", "x"), ("out_q", "resized")):
        inits += [numpy_helper.from_array(np.array(2.0**-4, np.float32), f"{name}_scale"),
                  numpy_helper.from_array(np.array(0.0, np.float32), f"{name}_zp"),
                  numpy_helper.from_array(np.array(float(bits), np.float32), f"{name}_bits")]
        nodes.append(helper.make_node("Quant", [src, f"{name}_scale", f"{name}_zp", f"{name}_bits"],
                                      [f"{name}_out"], name=name, domain="qonnx.custom_op.general", narrow=0,
                                      signed=int(signed), rounding_mode="ROUND"))
    inputs = ["in_q_out"]
    if scales is not None and not scales_attr:
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes"))
    if op == "Upsample" and scales_attr:
        attrs["scales"] = [float(s) for s in scales]
    elif op == "Upsample" or opset == 10:
        inputs.append("scales")
    elif opset < 13:  # roi and scales are required inputs (empty tensors when unused)
        inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
        inputs += ["roi", "scales"]
    else:
        inputs += ["", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
        while not inputs[-1]:
            inputs.pop()
    nodes.insert(1, helper.make_node(op, inputs, ["resized"], name="the_resize", **attrs))
    full = [1, *shape]
    axes = [a % len(full) for a in attrs.get("axes", range(len(full)))]
    out_shape = list(full)
    for i, axis in enumerate(axes):
        out_shape[axis] = int(sizes[i]) if sizes is not None else int(np.float32(scales[i]) * np.float32(full[axis]))
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("out_q_out", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("qonnx.custom_op.general", 2)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# name -> (input shape (C, H, W) or (C, L), resize_graph keywords, whether the tables are plain repetition)
GRAPHS = {
    "scales_asymmetric_floor": ((3, 4, 5), dict(scales=[1, 1, 2, 3], coordinate_transformation_mode="asymmetric",
                                                nearest_mode="floor", mode="nearest"), True),
    "sizes_defaults_half_pixel": ((2, 3, 4), dict(sizes=[1, 2, 9, 8]), True),
    "half_pixel_floor": ((2, 5, 4), dict(scales=[1, 1, 2, 2], nearest_mode="floor"), False),
    "half_pixel_ceil_x3": ((2, 4, 3), dict(scales=[1, 1, 3, 3], nearest_mode="ceil"), False),
    "align_corners_round_prefer_ceil": ((2, 3, 3), dict(scales=[1, 1, 3, 2], coordinate_transformation_mode=
                                                        "align_corners", nearest_mode="round_prefer_ceil"), False),
    "align_corners_round_prefer_floor": ((1, 3, 3), dict(scales=[1, 1, 3, 3], coordinate_transformation_mode=
                                                         "align_corners"), False),
    "asymmetric_round_prefer_ceil": ((2, 4, 4), dict(scales=[1, 1, 3, 2], coordinate_transformation_mode="asymmetric",
                                                     nearest_mode="round_prefer_ceil"), False),
    "pytorch_half_pixel_ceil": ((2, 3, 4), dict(scales=[1, 1, 2, 4], coordinate_transformation_mode=
                                                "pytorch_half_pixel", nearest_mode="ceil"), False),
    "tf_half_pixel_for_nn": ((2, 4, 3), dict(opset=11, scales=[1, 1, 2, 2], coordinate_transformation_mode=
                                             "tf_half_pixel_for_nn", nearest_mode="round_prefer_ceil"), False),
    "opset18_axes_scales": ((2, 3, 4), dict(opset=18, scales=[2, 3], axes=[2, 3],
                                            coordinate_transformation_mode="asymmetric", nearest_mode="floor"), True),
    "opset19_half_pixel_symmetric_sizes": ((2, 3, 4), dict(opset=19, sizes=[6, 4], axes=[-2, -1],
                                                           coordinate_transformation_mode="half_pixel_symmetric"),
                                           True),
    "resize1d_sizes": ((3, 7), dict(sizes=[1, 3, 21], coordinate_transformation_mode="asymmetric",
                                    nearest_mode="floor"), True),
    "int16_codes": ((2, 3, 3), dict(scales=[1, 1, 2, 2], bits=16, coordinate_transformation_mode="asymmetric",
                                    nearest_mode="floor"), True),
    "uint8_codes_align_corners": ((2, 4, 4), dict(scales=[1, 1, 2, 2], signed=False, coordinate_transformation_mode=
                                                  "align_corners"), True),
    "upsample_opset9": ((2, 3, 4), dict(op="Upsample", opset=9, scales=[1, 1, 2, 3], mode="nearest"), True),
    "upsample_opset7_attribute": ((2, 3, 4), dict(op="Upsample", opset=7, scales=[1, 1, 3, 2], scales_attr=True,
                                                  mode="nearest"), True),
    "resize_opset10": ((2, 3, 4), dict(opset=10, scales=[1, 1, 2, 2], mode="nearest"), True),
}


def _assert_exact(rep):
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for name in ("qonnx", "host", "firmware"):
        assert stages[name].must_be_exact and stages[name].elements > 0 and stages[name].mismatches == 0, rep.table()
    assert rep.ok, rep.table()


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_handwritten_resize_bit_exact(name, tmp_path):
    shape, kw, repeat = GRAPHS[name]
    build(resize_graph(tmp_path / "m.onnx", shape, **kw), "cortex-m4", "mps2-an386", tmp_path / "b",
          kernels="reference")
    nodes = [n for n in Graph.load(tmp_path / "b").nodes if n.op == "resize"]
    assert len(nodes) == 1
    a = nodes[0].attrs
    plain = all(t == [o // k for o in range(len(t))] for t, k in ((a["rows"], a["scale"][0]),
                                                                   (a["cols"], a["scale"][1])))
    assert plain == repeat, a  # the cases below cover both the division and the table forms of the kernel
    c = (tmp_path / "b" / "src" / "model.c").read_text()
    assert ("static const uint16_t src_" in c) == (not repeat)
    _assert_exact(verify(tmp_path / "b", count=48, seed=3))


def test_table_kernel_on_helium_core(tmp_path):
    """A table-driven resize on the Cortex-M55 (mps3-an547), -O2 with Helium auto-vectorisation."""
    shape, kw, _ = GRAPHS["align_corners_round_prefer_ceil"]
    build(resize_graph(tmp_path / "m.onnx", shape, **kw), "cortex-m55", "mps3-an547", tmp_path / "b")
    _assert_exact(verify(tmp_path / "b", count=32, seed=4))


# every mode and rounding against ONNX's own reference implementation (float64 coordinates)
@pytest.mark.parametrize("coordinate", ["asymmetric", "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                        "align_corners"])
@pytest.mark.parametrize("nearest", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_tables_match_onnx_reference(coordinate, nearest):
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    for length in (1, 2, 3, 5, 8):
        for k in (1, 2, 3, 4, 6):
            node = helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="nearest",
                                    coordinate_transformation_mode=coordinate, nearest_mode=nearest)
            graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, [1, 1, length])],
                                      [helper.make_tensor_value_info("Y", 1, None)],
                                      [helper.make_tensor("scales", 1, [3], [1.0, 1.0, float(k)])])
            ref = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
            (y,) = ref.run(None, {"X": np.arange(length, dtype=np.float32).reshape(1, 1, length)})
            want = y.ravel().astype(int).tolist()
            got = [exact_source(o, k, length, length * k, coordinate, nearest) for o in range(length * k)]
            assert got == want, (length, k)
            assert float32_sources(k, length, length * k, coordinate, nearest).tolist() == want


# ---------------------------------------------------------------------------------------
# Faults of one index are caught
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table_build(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resize")
    shape, kw, _ = GRAPHS["half_pixel_floor"]
    build(resize_graph(d / "m.onnx", shape, **kw), "cortex-m4", "mps2-an386", d / "b")
    return d / "b"


def test_simulator_reading_plain_repetition_is_caught(table_build, monkeypatch):
    """half_pixel + floor reads rows 0,0,0,1,1,2,...: a simulator that repeats (o // 2) differs."""
    import edgekit.ops.resize as op

    def repeat(self, node, inputs, graph):
        a = self.attrs(node)
        return [inputs[0].repeat(a.scale[0], axis=1).repeat(a.scale[1], axis=2)]

    monkeypatch.setattr(op.Resize, "simulate", repeat)
    rep = verify(table_build, count=32, seed=1)
    assert not rep.ok
    for s in rep.stages[1:]:  # qonnx, host C and firmware all disagree with the faulty simulator
        assert s.mismatches > 0, rep.table()


def test_c_kernel_off_by_one_index_is_caught(table_build, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(table_build, b)
    src = (b / "src" / "model.c").read_text()
    broken = src.replace("src_y[10] = { 0, 0, 0, 1,", "src_y[10] = { 0, 0, 1, 1,")
    assert broken != src
    (b / "src" / "model.c").write_text(broken)
    m = json.loads((b / "manifest.json").read_text())
    tc.compile_host(b)
    compile_firmware(b, get_core(m["target"]), get_board(m["board"]), b / "firmware" / "link.ld")
    rep = verify(b, count=32, seed=1)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    assert not rep.ok and stages["qonnx"].mismatches == 0
    assert stages["host"].mismatches > 0 and stages["firmware"].mismatches > 0, rep.table()


# ---------------------------------------------------------------------------------------
# Refusals: one error naming the node and what is not integer-factor nearest
# ---------------------------------------------------------------------------------------
REFUSED = {
    "linear_mode": ((2, 3, 4), dict(scales=[1, 1, 2, 2], mode="linear"), r"'the_resize' \(Resize.*\): mode 'linear'"),
    "cubic_mode": ((2, 3, 4), dict(scales=[1, 1, 2, 2], mode="cubic"), r"mode 'cubic'"),
    "non_integer_factor": ((2, 4, 4), dict(scales=[1, 1, 1.5, 2]), r"the_resize.*factor of 1\.5 on axis 2.*integer"),
    "non_integer_sizes": ((2, 4, 4), dict(sizes=[1, 2, 6, 8]), r"the_resize.*factor of 6/4 on axis 2"),
    "downsampling": ((2, 4, 4), dict(scales=[1, 1, 0.5, 0.5]), r"the_resize.*factor of 0\.5"),
    "channel_scale": ((2, 3, 4), dict(scales=[1, 2, 2, 2]), r"the_resize.*resize the channel axis"),
    "crop_and_resize": ((2, 3, 4), dict(scales=[1, 1, 2, 2], coordinate_transformation_mode="tf_crop_and_resize"),
                        r"the_resize.*coordinate_transformation_mode 'tf_crop_and_resize' is not supported"),
    "keep_aspect_ratio": ((2, 3, 4), dict(opset=18, sizes=[6, 8], axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
                          r"the_resize.*keep_aspect_ratio_policy 'not_larger'"),
    "antialias": ((2, 3, 4), dict(opset=18, scales=[1, 1, 2, 2], antialias=1), r"the_resize.*antialias=1"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(name, tmp_path):
    shape, kw, message = REFUSED[name]
    with pytest.raises(UnsupportedOpError, match=message):
        build(resize_graph(tmp_path / "m.onnx", shape, **kw), "cortex-m4", "mps2-an386", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_cli_refusal_is_one_error_line(tmp_path):
    shape, kw, _ = REFUSED["linear_mode"]
    model = resize_graph(tmp_path / "m.onnx", shape, **kw)
    r = subprocess.run([sys.executable, "-m", "edgekit", "build", str(model), "--board", "mps2-an386", "-o",
                        str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "the_resize" in lines[0] and "mode 'linear'" in lines[0]


def test_resize_of_an_accumulator_is_refused(tmp_path):
    from edgekit.qat import export_qonnx
    from helpers.calibration import calibrate
    import torch

    torch.manual_seed(0)
    model = calibrate(Seq(qconv2d(3, 4, 3), nn.Upsample(scale_factor=2)), (3, 6, 6))
    path = export_qonnx(model, torch.zeros(1, 3, 6, 6), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedOpError, match=r"Resize.*int32 accumulator; put a quantizer"):
        build(path, "cortex-m4", "mps2-an386", tmp_path / "b")


def test_fpga_refuses_resize_naming_the_node(tmp_path):
    pytest.importorskip("hls4ml")
    shape, kw, _ = GRAPHS["scales_asymmetric_floor"]
    with pytest.raises(UnsupportedOpError, match=r"'the_resize' \(Resize.*hls4ml .*does not convert Resize"):
        build(resize_graph(tmp_path / "m.onnx", shape, **kw), "fpga", "pynq-z2", tmp_path / "b")


def test_huge_output_is_refused_quickly(tmp_path):
    """A factor of 4096 on a 1D map of 20: 81,920 outputs on one axis, refused before any table is computed."""
    with pytest.raises(UnsupportedOpError, match=r"the_resize.*at most 65536 per axis"):
        build(resize_graph(tmp_path / "m.onnx", (1, 20), scales=[1, 1, 4096]), "cortex-m4", "mps2-an386",
              tmp_path / "b")
