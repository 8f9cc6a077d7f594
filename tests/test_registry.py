"""Registries refuse a second registration of a name, naming both places; packages are discovered."""
from __future__ import annotations

import sys
import textwrap

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
