"""Shared fixtures: small Brevitas models exported to QONNX, and their build directories
(the model code itself is in tests/helpers/).

Models are tiny (a few hundred MACs) so exporting, building and running them on QEMU
takes about a second each; they are built once per test session.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers.brevitas_models import export_mlp

os.environ.setdefault("EDGEKIT_CACHE", str(Path(__file__).parent / ".cache"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def pow2_onnx(models_dir) -> Path:
    return export_mlp(models_dir / "mlp_int8_pow2.onnx", "int8-pow2")


@pytest.fixture(scope="session")
def float_onnx(models_dir) -> Path:
    return export_mlp(models_dir / "mlp_int8_float.onnx", "int8-float")


@pytest.fixture(scope="session")
def w4_onnx(models_dir) -> Path:
    return export_mlp(models_dir / "mlp_w4a8_pow2.onnx", "w4a8-pow2")


@pytest.fixture(scope="session")
def pow2_build(pow2_onnx, tmp_path_factory) -> Path:
    from edgekit.api import build

    out = tmp_path_factory.mktemp("builds") / "pow2"
    build(pow2_onnx, "cortex-m4", "mps2-an386", out)
    return out


@pytest.fixture(scope="session")
def float_build(float_onnx, tmp_path_factory) -> Path:
    from edgekit.api import build

    out = tmp_path_factory.mktemp("builds") / "float"
    build(float_onnx, "cortex-m4", "mps2-an386", out)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
