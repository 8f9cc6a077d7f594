"""Registries refuse a second registration of a name, naming both places; packages are discovered."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from edgekit.errors import RegistryError
from edgekit.frontends import qonnx, qonnx_lowering
from edgekit.ir.operators import Op, operators, register
from edgekit.registry import Registry, discover


def test_operator_registered_twice_fails():
    OPS = operators()
    first = OPS.place_of("relu")
    with pytest.raises(RegistryError) as e:
        @register
        class AnotherRelu(Op):
            name = "relu"
    msg = str(e.value)
    assert "IR operator 'relu'" in msg
    assert first == "edgekit.ops.relu:Relu" and first in msg
    assert f"{__name__}:test_operator_registered_twice_fails.<locals>.AnotherRelu" in msg
    assert type(OPS["relu"]).__module__ == "edgekit.ops.relu"  # the first registration stands


def test_lowering_registered_twice_fails():
    with pytest.raises(RegistryError) as e:
        @qonnx_lowering.lowering("Tanh2", "Relu")
        def lower_my_relu(lw, node):
            pass
    msg = str(e.value)
    assert "'Relu'" in msg and "edgekit.frontends.qonnx:lower_relu" in msg and "lower_my_relu" in msg
    assert "Tanh2" not in qonnx_lowering.LOWERINGS  # all or nothing
    assert qonnx_lowering.LOWERINGS["Relu"] is qonnx.lower_relu


def test_resolver_registered_twice_fails():
    with pytest.raises(RegistryError, match=r"pending float op 'clip'.*qonnx_ops\.clip:resolve_clip"):
        @qonnx_lowering.resolves("clip")
        def resolve_again(lw, node, v, out):
            pass


def test_add_is_one_lowering():
    """The residual and the bias add are one Add lowering (it used to be registered twice)."""
    assert qonnx_lowering.LOWERINGS.place_of("Add") == "edgekit.frontends.qonnx_ops.add:lower_add"


def test_discovery_imports_every_module_and_a_duplicate_module_fails(tmp_path, monkeypatch):
    pkg = tmp_path / "ek_plugins_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from edgekit.registry import Registry\nREG = Registry('demo op')\n")
    for mod in ("first", "second"):
        (pkg / f"{mod}.py").write_text(textwrap.dedent("""
            from . import REG
            def kernel():
                pass
            REG.add("same", kernel)
        """))
    (pkg / "_helper.py").write_text("raise AssertionError('helpers are not discovered')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(RegistryError, match=r"demo op 'same' is registered twice: first by "
                                                 r"ek_plugins_demo\.first:kernel, again by ek_plugins_demo\.second:kernel"):
            discover("ek_plugins_demo")
        (pkg / "second.py").write_text("from . import REG\nREG.add('other', len, 'here')\n")
        sys.modules.pop("ek_plugins_demo.second", None)
        assert discover("ek_plugins_demo") == ["first", "second"]
        assert sorted(sys.modules["ek_plugins_demo"].REG) == ["other", "same"]
    finally:
        for name in [m for m in sys.modules if m.startswith("ek_plugins_demo")]:
            del sys.modules[name]


def test_every_operator_module_is_discovered():
    import pkgutil

    import edgekit.ops

    modules = {m.name for m in pkgutil.iter_modules(edgekit.ops.__path__) if not m.name.startswith("_")}
    OPS = operators()
    registered = {OPS.place_of(name).split(":")[0].rsplit(".", 1)[1] for name in OPS}
    assert registered == modules


def test_registry_is_read_only():
    reg = Registry("thing")
    reg.add("a", 1, "here")
    with pytest.raises(TypeError):
        reg["b"] = 2


# ---- the operator spec: typed attributes, declared properties ----------------------------
def test_node_attributes_are_checked_when_created():
    from edgekit.ir.contract import make_requant
    from edgekit.ir.graph import Node
    from edgekit.ir.operators import InvalidAttributesError

    rq = make_requant(np.array([0.5]), 0, -128, 127)
    Node("fc", "dense", ["x", "w", "b"], ["y"], {"requant": rq})
    Node("fc", "dense", ["x", "w", "b"], ["y"], {})  # requant defaults to None (int32 out)
    with pytest.raises(InvalidAttributesError, match=r"node 'fc' \(IR op 'dense'\): unknown attribute\(s\) stride"):
        Node("fc", "dense", ["x", "w", "b"], ["y"], {"requant": rq, "stride": [1, 1]})
    with pytest.raises(InvalidAttributesError, match="attribute 'requant' = 0.5 is not of type"):
        Node("fc", "dense", ["x", "w", "b"], ["y"], {"requant": 0.5})
    conv = dict(kernel=[3, 3], stride=[1, 1], dilation=[1, 1], pad=[1, 1, 1, 1], depthwise=False, depth_multiplier=1)
    Node("c", "conv2d", ["x", "w", "b"], ["y"], dict(conv, kernel=(np.int64(3), 3)))  # tuples, numpy ints
    with pytest.raises(InvalidAttributesError, match="attribute 'depthwise' is missing"):
        Node("c", "conv2d", ["x", "w", "b"], ["y"], {k: v for k, v in conv.items() if k != "depthwise"})
    with pytest.raises(InvalidAttributesError, match="attribute 'kernel' = '3x3'"):
        Node("c", "conv2d", ["x", "w", "b"], ["y"], dict(conv, kernel="3x3"))
    with pytest.raises(InvalidAttributesError, match="attribute 'depth_multiplier' = True"):
        Node("c", "conv2d", ["x", "w", "b"], ["y"], dict(conv, depth_multiplier=True))


def test_typed_attributes_view():
    from edgekit.ir.graph import Node

    conv = dict(kernel=[3, 1], stride=[2, 1], dilation=[1, 1], pad=[1, 0, 1, 0], depthwise=True, depth_multiplier=2)
    node = Node("c", "conv2d", ["x", "w", "b"], ["y"], conv)
    a = operators()["conv2d"].attrs(node)
    assert (a.kernel, a.stride, a.depthwise, a.depth_multiplier, a.requant, a.residual) == ([3, 1], [2, 1], True, 2,
                                                                                           None, None)


def test_tampered_ir_json_is_one_clear_error(pow2_build, tmp_path):
    import json
    import shutil

    from edgekit.errors import BuildDirError
    from edgekit.ir.graph import Graph

    b = shutil.copytree(pow2_build, tmp_path / "b")
    doc = json.loads((b / "ir.json").read_text())
    node = next(n for n in doc["nodes"] if n["op"] == "dense")
    node["attrs"]["requant"] = "fast"
    (b / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(BuildDirError, match=rf"ir.json: node '{node['name']}' \(IR op 'dense'\): attribute "
                                            r"'requant' = 'fast' is not of type .*; rebuild"):
        Graph.load(b)


def test_operator_declarations_are_consistent():
    from pathlib import Path

    from edgekit.ir.operators import HLS_ROLES, hls_layers
    from edgekit.resources import resource_dir

    ops_dir = Path(resource_dir("templates")) / "cortexm" / "ops"
    for name, op in operators().items():
        assert op.alias or (ops_dir / op.template).is_file(), name
        assert not op.packs_weights or op.accumulates, name  # weights -> an int32 accumulator
        assert all(h.role in HLS_ROLES for h in op.hls_layers)
        if any(h.role == "compute" for h in op.hls_layers):
            assert op.packs_weights, name
    # the classes the FPGA path tells apart, each declared by exactly one operator
    assert {c for c, (_, h) in hls_layers().items() if h.role == "compute"} == {
        "Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D", "DepthwiseConv1D", "DepthwiseConv2D"}
    assert {c for c, (_, h) in hls_layers().items() if h.role == "activation"} == {"Activation", "ReLU"}


def test_hls_compute_geometry_from_the_operator():
    from edgekit.ir.operators import hls_layers

    class Layer:
        def __init__(self, **attrs):
            self.attrs = attrs

        def get_attr(self, key):
            return self.attrs[key]

    dense = Layer(n_in=16, n_out=8)
    conv = Layer(n_chan=3, filt_width=3, filt_height=2, n_filt=4, out_width=5, out_height=6)
    dw1 = Layer(filt_width=5, n_filt=4, out_width=7)
    assert hls_layers()["Dense"][1].geometry(dense) == (16, 8, 1)
    assert hls_layers()["Conv2D"][1].geometry(conv) == (18, 4, 30)
    assert hls_layers()["DepthwiseConv1D"][1].geometry(dw1) == (5, 4, 7)
