"""The per-operator check behind tests/ops/: one model, one frontend, one kernel variant.

Each ``tests/ops/test_<op>.py`` lists its QONNX cases (tiny Brevitas models, most of them from
:mod:`helpers.op_models` by name) and TFLite cases
(synthetic int8 flatbuffers) and runs :func:`check` over the matrix
{qonnx, tflite} x {reference, dsp, helium} that :func:`matrix` builds. A combination that does
not apply (the frontend has no such operator, no layer of the model gets such a kernel) is a
skipped parameter that says why. A variant that applies must really run: the manifest must
show the variant's kernel on at least one layer, so a declaration cannot fake coverage.

``verify`` compares element by element, so a single 1-LSB difference between the simulator
and qonnx (where the contract promises exactness), TFLite Micro, the host C or the firmware
fails the check. The host build always runs the reference kernels (EK_USE_DSP is 0 there);
the firmware runs the variant's.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .codes import input_codes
from .tflm import tflm_runtime


@dataclass(frozen=True)
class Variant:
    target: str
    board: str
    kernels: str          # edgekit build --kernels
    marker: str           # what the manifest's layer "kernel" starts with when the variant ran


VARIANTS = {
    "reference": Variant("cortex-m4", "mps2-an386", "reference", "reference"),
    "dsp": Variant("cortex-m4", "mps2-an386", "optimized", "optimized "),
    "helium": Variant("cortex-m55", "mps3-an547", "optimized", "optimized mve_"),
}
FRONTENDS = ("qonnx", "tflite")
ALL_KERNELS = tuple(VARIANTS)


@dataclass(frozen=True)
class QonnxCase:
    """A Brevitas model (``factory()``) on inputs of ``shape`` (no batch axis)."""
    name: str
    factory: Callable
    shape: tuple
    exact: bool = True                  # simulator vs qonnx bit-exact (False: float scales, within 2 LSB)
    kernels: tuple = ("reference",)     # the variants whose kernels this model's layers get
    why_not: dict = field(default_factory=dict)  # variant -> why it does not apply (overrides the op's)
    ops: tuple = ()                     # IR operators the graph must hold (default: the module's)

    @classmethod
    def named(cls, name: str, **kw) -> "QonnxCase":
        """The model ``name`` of :func:`helpers.op_models.op_models`."""
        from .op_models import op_models

        factory, shape, exact = op_models()[name]
        return cls(name, factory, shape, exact, **kw)

    def export(self, directory: Path) -> Path:
        import torch

        from edgekit.qat import export_qonnx

        from .calibration import calibrate

        torch.manual_seed(zlib.crc32(self.name.encode()) % 1000)  # str hash() changes per process
        model = calibrate(self.factory(), self.shape)
        return export_qonnx(model, torch.zeros(1, *self.shape), directory / f"{self.name}.onnx")


@dataclass(frozen=True)
class TfliteCase:
    """A synthetic int8 .tflite model (``model()`` returns its bytes)."""
    name: str
    model: Callable[[], bytes]
    kernels: tuple = ("reference",)
    why_not: dict = field(default_factory=dict)
    ops: tuple = ()

    def export(self, directory: Path) -> Path:
        path = directory / f"{self.name}.tflite"
        path.write_bytes(self.model())
        return path


def matrix(op: str, qonnx: list[QonnxCase], tflite: list[TfliteCase], no_kernel: dict[str, str] | None = None,
           no_tflite: str = "", no_qonnx: str = "") -> list:
    """pytest parameters (frontend, variant, case) for every combination; the ones that do not
    apply are skipped with the case's ``why_not``, else ``no_kernel[variant]``, else a reason
    naming the operator. A frontend without cases is one skipped parameter (``no_tflite``)."""
    no_kernel = no_kernel or {}
    params = []
    for frontend, cases, missing in (("qonnx", qonnx, no_qonnx), ("tflite", tflite, no_tflite)):
        if not cases:
            assert missing, f"{op}: say why there is no {frontend} case"
            params.append(pytest.param(frontend, None, None, id=f"{frontend}-none",
                                       marks=pytest.mark.skip(reason=missing)))
            continue
        for case in cases:
            for variant in VARIANTS:
                marks = ()
                if variant not in case.kernels:
                    reason = (case.why_not.get(variant) or no_kernel.get(variant)
                              or f"{op} has no {variant} kernel: its layers run the reference kernel on every core")
                    marks = pytest.mark.skip(reason=reason)
                params.append(pytest.param(frontend, variant, case, id=f"{frontend}-{variant}-{case.name}",
                                           marks=marks))
    return params


def check(frontend: str, variant: str, case, tmp_path: Path, ops: set[str]) -> None:
    """Build ``case`` for ``variant``, verify every stage, check that the variant's kernels ran and
    that the graph holds the operators ``case.ops`` (default ``ops``)."""
    from edgekit.api import build, verify
    from edgekit.ir.graph import Graph

    v = VARIANTS[variant]
    model = case.export(tmp_path)
    out = tmp_path / "b"
    res = build(model, v.target, v.board, out, kernels=v.kernels)
    graph = Graph.load(out)
    want = set(case.ops) or ops
    assert want <= {n.op for n in graph.nodes}, ({n.op for n in graph.nodes}, want)
    if frontend == "qonnx":
        rep = verify(out, count=96, seed=2)
    else:
        t = graph.tensors[graph.inputs[0]]
        codes = input_codes(np.random.default_rng(zlib.crc32(case.name.encode())), t.shape, 48, t.zero_point)
        rep = verify(out, codes=codes)
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    for name in ("host", "firmware"):
        assert stages[name].elements > 0 and stages[name].mismatches == 0, rep.table()
    if frontend == "qonnx":
        q = stages["qonnx"]
        if case.exact:
            assert q.must_be_exact and q.mismatches == 0, rep.table()
        else:
            assert not q.must_be_exact and q.max_lsb <= 2, rep.table()
    else:
        ref = stages["tflite"]
        if tflm_runtime() is not None:
            assert ref.must_be_exact and ref.elements > 0 and ref.mismatches == 0, rep.table()
        else:
            assert "skipped" in ref.note
    assert rep.ok, rep.table()
    kernels = [r.get("kernel", "") for r in res.manifest.layers]
    if variant == "reference":
        assert not any(k.startswith("optimized") for k in kernels), kernels
    elif variant == "dsp":
        assert any(k.startswith(v.marker) and not k.startswith(VARIANTS["helium"].marker) for k in kernels), kernels
    else:
        assert any(k.startswith(v.marker) for k in kernels), kernels
