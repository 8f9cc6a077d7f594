"""Verification stages every backend shares: test inputs, the comparison of output codes with the
simulator, the report, and the reference stages (qonnx's float execution, TFLite Micro).

A backend's ``verify`` (edgekit.backends.base.Backend) runs the simulator, these reference
stages and its own stages (Cortex-M: host C and firmware; FPGA: hls4ml C-simulation), each
compared with :func:`compare`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .arrays import load_npy
from .errors import VerificationError
from .ir.contract import dequantized_to_codes, is_power_of_two, requants_in
from .ir.graph import INVERSE_STEPS, Graph, apply_pre_ops, pre_op_shapes, unapply_pre_ops


@dataclass
class StageResult:
    stage: str
    must_be_exact: bool
    elements: int
    mismatches: int
    max_lsb: int
    note: str = ""

    @property
    def share(self) -> float:
        return self.mismatches / self.elements if self.elements else 0.0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 or not self.must_be_exact


@dataclass
class VerifyReport:
    build_dir: str
    board: str
    vectors: int
    input_source: str
    output_shape: list
    stages: list[StageResult]
    memory: dict
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    def to_json(self) -> dict:
        d = asdict(self)
        for s, st in zip(d["stages"], self.stages):
            s["share"] = st.share
            s["ok"] = st.ok
        d["ok"] = self.ok
        return d

    def table(self) -> str:
        return "\n".join(self.stage_lines() + self.footer_lines() + [self.verdict()])

    def stage_lines(self) -> list[str]:
        """The heading and one row per stage."""
        lines = [f"edgekit verify {self.build_dir}: {self.vectors} vectors ({self.input_source}), "
                 f"output {self.output_shape}, reference = simulator",
                 f"{'stage':<22}{'must be exact':>14}{'mismatching':>14}{'share':>10}{'max diff (LSB)':>16}  result"]
        for s in self.stages:
            res = "ok" if s.mismatches == 0 else ("FAIL" if s.must_be_exact else "differs (reported)")
            if s.elements == 0 and s.note.startswith("skipped"):
                res = "skipped"
            lines.append(f"{s.stage:<22}{'yes' if s.must_be_exact else 'no':>14}"
                         f"{f'{s.mismatches}/{s.elements}':>14}{100 * s.share:>9.3f}%{s.max_lsb:>16}  {res}"
                         + (f"  [{s.note}]" if s.note else ""))
        return lines

    def footer_lines(self) -> list[str]:
        """Lines a backend adds under the stages (what the build occupies, what was measured)."""
        return []

    def verdict(self) -> str:
        return ("PASS: every stage that must be exact is exact" if self.ok
                else "FAIL: a stage that must be exact differs from the simulator")


def generate_inputs(graph: Graph, count: int, seed: int = 0) -> np.ndarray:
    """Seeded float inputs covering the input quantizer's whole range.

    Per element: on-grid values for every code, exact ties between codes (checks
    round-half-to-even), values beyond both ends (saturation) and uniform noise. The
    first three vectors are all-minimum, all-maximum and all-zero-point.
    """
    iq = graph.input_quant
    rng = np.random.default_rng(seed)
    # with float arithmetic before the quantizer, generate what the quantizer sees, then map it back
    arithmetic = any(op in INVERSE_STEPS for op, _ in iq.pre_ops)
    shape = (count,) + (pre_op_shapes(iq)[-1] if arithmetic else tuple(iq.float_shape))
    codes = rng.integers(iq.qmin, iq.qmax + 1, size=shape).astype(np.float64)
    kind = rng.integers(0, 4, size=shape)
    lo, hi = (iq.qmin - iq.zero_point) * iq.scale, (iq.qmax - iq.zero_point) * iq.scale
    x = (codes - iq.zero_point) * iq.scale
    x = np.where(kind == 1, x + 0.5 * iq.scale, x)  # ties
    x = np.where(kind == 2, rng.uniform(lo - 4 * abs(hi - lo), hi + 4 * abs(hi - lo), size=shape), x)
    x = np.where(kind == 3, rng.uniform(lo, hi, size=shape), x)
    if count >= 3:
        x[0], x[1], x[2] = lo, hi, 0.0
    return unapply_pre_ops(iq, x) if arithmetic else x.astype(np.float32)


def load_float_inputs(graph: Graph, inputs, count: int = 256, seed: int = 0) -> tuple[np.ndarray, str]:
    """Float inputs in the model's input layout, and where they came from: generated (None),
    an array, or an .npy file; a flat or mis-shaped array is reshaped if it holds whole samples."""
    if inputs is None:
        x, source = generate_inputs(graph, count, seed), f"generated, seed {seed}"
    elif isinstance(inputs, np.ndarray):
        x, source = inputs, "array"
    else:
        x, source = load_npy(inputs, "float inputs", VerificationError), str(inputs)
    fshape = tuple(graph.input_quant.float_shape)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != fshape:
        if x.ndim < 2 or x.size % int(np.prod(fshape)) != 0:
            raise VerificationError(f"inputs have shape {x.shape}; expected (N, {', '.join(map(str, fshape))}) "
                                    "in the model's input layout")
        x = x.reshape((-1,) + fshape)
    return x, source


def qonnx_stage(model_path: Path, graph: Graph, x: np.ndarray, ref: np.ndarray, pow2: bool) -> StageResult:
    """qonnx's float32 execution as output codes, compared with the simulator's ``ref``.

    Must be exact only for power-of-two models whose accumulators stay below 2^24 and
    that use no approximated op (graph.meta["inexact"]); otherwise the difference is reported.
    """
    x = qonnx_input(graph, x)
    q = qonnx_output_codes(graph, run_qonnx(model_path, x))
    float_exact = bool(graph.meta.get("qonnx_float_exact", True))
    inexact = graph.meta.get("inexact", [])
    note = "" if pow2 else "float scales: qonnx rounds in float32, edgekit uses Q31 multipliers"
    if pow2 and not float_exact:
        note = "accumulators can exceed 2^24, where qonnx's float32 arithmetic is inexact"
    if pow2 and inexact:
        note = "; ".join(inexact)
    return compare("qonnx (float32)", q, ref, pow2 and float_exact and not inexact, note)


def qonnx_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """What qonnx is fed for the float samples ``x``: ``x`` itself, or, for a graph without an
    input quantizer (an input annotation), the grid points that the codes stand for."""
    iq = graph.input_quant
    if not iq.annotation:
        return x
    grid = (quantize_on_host(graph, x) - iq.zero_point) * np.float64(iq.scale)
    x = unapply_pre_ops(iq, grid)
    if not np.array_equal(apply_pre_ops(iq, x).ravel(), grid.astype(np.float32).ravel()):
        raise VerificationError("the input's float pre-processing cannot be inverted exactly in float32, "
                                "so qonnx cannot be fed the input grid; verify with --skip qonnx")
    return x


def qonnx_output_codes(graph: Graph, y: np.ndarray) -> np.ndarray:
    """qonnx's float output as the output tensor's codes, (N, output size), in the IR's order."""
    out_t = graph.tensors[graph.outputs[0]]
    y = np.asarray(y, np.float64)
    if y.ndim in (3, 4):  # channels-first feature map: compare in the IR's channels-last order
        y = np.moveaxis(y, 1, -1)
    y = y.reshape(y.shape[0], -1)
    scale = np.resize(np.asarray(out_t.scale, np.float64), y.shape[1])  # per channel: last IR axis
    for step, c in reversed(graph.meta.get("output_post_ops") or []):  # float arithmetic after the last layer, undone
        y = INVERSE_STEPS[step](y, np.resize(np.asarray(c, np.float64), y.shape[1]))
    return dequantized_to_codes(y, scale, out_t.zero_point)


def quantize_on_host(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The input quantizer's codes of float samples, in the layout the quantizer sees."""
    from .ir.contract import input_quantizer

    iq = graph.input_quant
    return input_quantizer(iq.rounding)(apply_pre_ops(iq, x), iq.scale, iq.zero_point, iq.qmin, iq.qmax)


def run_qonnx(model_path: Path, x: np.ndarray) -> np.ndarray:
    return qonnx_executor(model_path, x.shape[0])(x)


def resize_sizes_to_batch(model, batch: int) -> None:
    """Set the batch entry of every Resize's constant ``sizes`` to ``batch``, as qonnx's
    ChangeBatchSize does for Reshape's shape (it leaves Resize's alone, which keeps batch 1)."""
    from onnx import helper

    for node in model.get_nodes_by_op_type("Resize"):
        axes = [list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"]
        sizes = model.get_initializer(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if sizes is not None and sizes.size and (not axes or 0 in axes[0]):
            sizes = sizes.copy()
            sizes[axes[0].index(0) if axes else 0] = batch
            model.set_initializer(node.input[3], sizes)


def qonnx_executor(model_path: Path, batch: int):
    """qonnx's execution of the model (cleaned, at batch size ``batch``): a function of the
    float input returning the float output; qonnx's errors become one VerificationError line."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.util.cleanup import cleanup_model

    def failed(e: Exception) -> VerificationError:  # qonnx's own errors on a graph it cannot run: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
        return VerificationError(f"{model_path}: qonnx cannot execute the model ({type(e).__name__}: {first}); "
                                 "verify --skip qonnx checks the other stages")

    try:
        model = ModelWrapper(str(model_path)).transform(ChangeBatchSize(batch))
        resize_sizes_to_batch(model, batch)
        model = cleanup_model(model)
        iname, oname = model.graph.input[0].name, model.graph.output[0].name
    except Exception as e:
        raise failed(e) from None

    def execute(x: np.ndarray) -> np.ndarray:
        try:
            return execute_onnx(model, {iname: x.astype(np.float32)})[oname]
        except Exception as e:
            raise failed(e) from None
    return execute


def compare(name: str, got: np.ndarray, ref: np.ndarray, exact: bool, note: str = "") -> StageResult:
    diff = np.abs(got.astype(np.int64).reshape(ref.shape) - ref.astype(np.int64))
    return StageResult(name, exact, int(diff.size), int(np.count_nonzero(diff)),
                       int(diff.max()) if diff.size else 0, note)


def load_codes(graph: Graph, codes) -> tuple[np.ndarray, str]:
    """Raw input codes (an integer array or .npy file), used as they are: (N, input size) int64."""
    source = "codes array"
    if not isinstance(codes, np.ndarray):
        codes, source = load_npy(codes, "input codes", VerificationError), f"codes {codes}"
    t = graph.tensors[graph.inputs[0]]
    if not np.issubdtype(codes.dtype, np.integer):
        raise VerificationError(f"input codes must be an integer array, got {codes.dtype}; pass float inputs "
                                "with --inputs instead")
    if codes.ndim < 2 or codes.size % t.size != 0:
        raise VerificationError(f"input codes have shape {codes.shape}; expected (N, {', '.join(map(str, t.shape))})")
    codes = codes.astype(np.int64).reshape((-1,) + tuple(t.shape))
    if codes.size and (codes.min() < t.qmin or codes.max() > t.qmax):
        raise VerificationError(f"input codes outside the input's range [{t.qmin}, {t.qmax}] ({t.dtype})")
    return codes, source


# TFLM's tensor arena for the reference stage: the interpreter's default is 10 x the model file, too small for a
# model of few weights and large activations (fuzz seed 5202: a 9x9x23 float input and one requantization needs
# 3,744 B where the default gives 3,680); grown by this factor until it allocates, up to the cap
TFLM_ARENA_GROWTH = 4
TFLM_ARENA_CAP = 1 << 30


def _tflm_interpreter(model_path: Path):
    from tflite_micro.python.tflite_micro import runtime

    arena = max(10 * Path(model_path).stat().st_size, 1 << 16)
    while True:
        try:
            return runtime.Interpreter.from_file(str(model_path), arena_size=arena)
        except RuntimeError as e:
            if "allocate" not in str(e) or arena >= TFLM_ARENA_CAP:
                raise
            arena = min(arena * TFLM_ARENA_GROWTH, TFLM_ARENA_CAP)


def run_tflite_reference(model_path: Path, codes: np.ndarray, graph: Graph | None = None,
                          floats: np.ndarray | None = None) -> np.ndarray:
    """The TFLite Micro interpreter (PyPI tflite-micro, reference kernels) on int8 codes.

    A model with a float interface gets each code as the float that its QUANTIZE maps back
    to exactly that code (or, given ``floats``, the user's float inputs themselves, so that
    TFLite's QUANTIZE is checked against edgekit's input quantizer), and its DEQUANTIZE-d
    output is turned back into codes (exact: the float is (q - zp) * scale)."""
    interpreter = _tflm_interpreter(model_path)
    shape = interpreter.get_input_details(0)["shape"]
    fi = (graph.meta.get("float_interface") if graph is not None else None) or {}
    iq = graph.input_quant if graph is not None else None
    y_t = graph.tensors[graph.outputs[0]] if graph is not None else None
    out = []
    for i, c in enumerate(codes):
        if fi.get("input") and floats is not None:
            x = np.asarray(floats[i], np.float32)
        elif fi.get("input"):
            x = ((c.astype(np.int64) - iq.zero_point) * np.float32(iq.scale)).astype(np.float32)
        else:
            x = c.astype(np.int8)
        interpreter.set_input(x.reshape(shape), 0)
        interpreter.invoke()
        y = np.array(interpreter.get_output(0)).ravel()
        if fi.get("output"):
            y = dequantized_to_codes(y, np.float32(y_t.scale[0]), y_t.zero_point).astype(np.int64)
        out.append(y)
    return np.stack(out).astype(np.int64)


def tflite_reference_available() -> bool:
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except Exception:  # not installed, or no wheel for this platform (x86-64 Linux only)
        return False
    return True


def power_of_two_model(graph: Graph) -> bool:
    """Every requantization exact (a fused residual add's and a concat's included) and a
    power-of-two input scale: qonnx's float32 execution is then exact."""
    requant_exact = all(rq.exact for n in graph.nodes for rq in requants_in(n.attrs))
    return requant_exact and is_power_of_two(graph.input_quant.scale)


def check_timeout(timeout: float | None) -> None:
    """A stage's time limit, when given, is a positive number of seconds."""
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise VerificationError(f"timeout {timeout!r}: give a positive number of seconds")
