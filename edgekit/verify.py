"""``edgekit verify``: run the same inputs through every stage and compare with the simulator.

Stages: qonnx execution of the cleaned model (float32), edgekit's integer simulator
(the reference), the generated C compiled for the host, and the firmware on the
emulated board. Outputs are compared as integer codes; a stage that the contract says
must be exact and differs makes the verification fail.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backends.cortexm import toolchain as tc
from .build import load_manifest
from .errors import VerificationError
from .ir.graph import Graph
from .ir.contract import dequantized_to_codes, is_power_of_two
from .sim import quantize_input, simulate


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
        """The heading and one row per stage (shared with the FPGA report)."""
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
        """What the firmware occupies, and what the board measured."""
        m = self.memory
        lines = [f"firmware on {self.board}: flash {m['flash_bytes']} B (code {m['text_bytes']}, "
                 f"constants {m['rodata_bytes']}), RAM {m['ram_bytes']} B (arena {m['arena_bytes']}, "
                 f"other .bss {m['bss_bytes'] - m['arena_bytes']}, .data {m['data_bytes']}, stack reserved "
                 f"{m['stack_bytes']}, stack used {m.get('stack_used_bytes', '?')})"]
        if "arena_touched_bytes" in m:
            lines.append(f"measured on the board: arena written up to byte {m['arena_touched_bytes']} of "
                         f"{m['arena_bytes']} planned; inference stack {m.get('inference_stack_bytes', '?')} B"
                         + (f" (static analysis: {m['inference_stack_static_bytes']} B)"
                            if "inference_stack_static_bytes" in m else ""))
        return lines

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
    shape = (count,) + tuple(iq.float_shape)
    codes = rng.integers(iq.qmin, iq.qmax + 1, size=shape).astype(np.float64)
    kind = rng.integers(0, 4, size=shape)
    lo, hi = (iq.qmin - iq.zero_point) * iq.scale, (iq.qmax - iq.zero_point) * iq.scale
    x = (codes - iq.zero_point) * iq.scale
    x = np.where(kind == 1, x + 0.5 * iq.scale, x)  # ties
    x = np.where(kind == 2, rng.uniform(lo - 4 * abs(hi - lo), hi + 4 * abs(hi - lo), size=shape), x)
    x = np.where(kind == 3, rng.uniform(lo, hi, size=shape), x)
    if count >= 3:
        x[0], x[1], x[2] = lo, hi, 0.0
    return x.astype(np.float32)


def load_float_inputs(graph: Graph, inputs, count: int = 256, seed: int = 0) -> tuple[np.ndarray, str]:
    """Float inputs in the model's input layout, and where they came from: generated (None),
    an array, or an .npy file; a flat or mis-shaped array is reshaped if it holds whole samples."""
    if inputs is None:
        x, source = generate_inputs(graph, count, seed), f"generated, seed {seed}"
    elif isinstance(inputs, np.ndarray):
        x, source = inputs, "array"
    else:
        try:
            x, source = np.load(inputs), str(inputs)
        except (OSError, ValueError) as e:
            raise VerificationError(f"{inputs}: cannot read inputs ({e})") from None
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
    out_t = graph.tensors[graph.outputs[0]]
    y = _run_qonnx(model_path, x).astype(np.float64)
    if y.ndim in (3, 4):  # channels-first feature map: compare in the IR's channels-last order
        y = np.moveaxis(y, 1, -1)
    y = y.reshape(x.shape[0], -1)
    scale = np.resize(np.asarray(out_t.scale, np.float64), y.shape[1])  # per channel: last IR axis
    q = dequantized_to_codes(y, scale, out_t.zero_point)
    float_exact = bool(graph.meta.get("qonnx_float_exact", True))
    inexact = graph.meta.get("inexact", [])
    note = "" if pow2 else "float scales: qonnx rounds in float32, edgekit uses Q31 multipliers"
    if pow2 and not float_exact:
        note = "accumulators can exceed 2^24, where qonnx's float32 arithmetic is inexact"
    if pow2 and inexact:
        note = "; ".join(inexact)
    return _compare("qonnx (float32)", q, ref, pow2 and float_exact and not inexact, note)


def _run_qonnx(model_path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.util.cleanup import cleanup_model

    model = ModelWrapper(str(model_path))
    model = cleanup_model(model.transform(ChangeBatchSize(x.shape[0])))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {iname: x.astype(np.float32)})[oname]


def _compare(name: str, got: np.ndarray, ref: np.ndarray, exact: bool, note: str = "") -> StageResult:
    diff = np.abs(got.astype(np.int64).reshape(ref.shape) - ref.astype(np.int64))
    return StageResult(name, exact, int(diff.size), int(np.count_nonzero(diff)),
                       int(diff.max()) if diff.size else 0, note)


def _run_binary(runner, codes: np.ndarray, dtype: str, out_count: int, out_dtype: str) -> tuple[np.ndarray, str]:
    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as d:
        work = Path(d)
        codes.astype(np.dtype(dtype)).tofile(work / "inputs.bin")
        proc = runner(work)
        out = np.fromfile(work / "outputs.bin", dtype=np.dtype(out_dtype))
    if out.size != codes.shape[0] * out_count:
        raise VerificationError(f"the harness wrote {out.size} outputs, expected {codes.shape[0] * out_count}")
    return out.reshape(codes.shape[0], out_count), proc.stdout + proc.stderr


def _load_codes(graph: Graph, codes) -> tuple[np.ndarray, str]:
    """Raw input codes (an integer array or .npy file), used as they are: (N, input size) int64."""
    source = "codes array"
    if not isinstance(codes, np.ndarray):
        try:
            codes, source = np.load(codes), f"codes {codes}"
        except (OSError, ValueError) as e:
            raise VerificationError(f"{codes}: cannot read input codes ({e})") from None
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


def _run_tflite_reference(model_path: Path, codes: np.ndarray, graph: Graph | None = None,
                          floats: np.ndarray | None = None) -> np.ndarray:
    """The TFLite Micro interpreter (PyPI tflite-micro, reference kernels) on int8 codes.

    A model with a float interface gets each code as the float that its QUANTIZE maps back
    to exactly that code (or, given ``floats``, the user's float inputs themselves, so that
    TFLite's QUANTIZE is checked against edgekit's input quantizer), and its DEQUANTIZE-d
    output is turned back into codes (exact: the float is (q - zp) * scale)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(model_path))
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


def _tflite_reference_available() -> bool:
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except Exception:  # not installed, or no wheel for this platform (x86-64 Linux only)
        return False
    return True


def verify(build_dir: str | Path, inputs: str | Path | np.ndarray | None = None, count: int = 256,
           seed: int = 0, stages: tuple[str, ...] = ("qonnx", "host", "qemu"),
           codes: str | Path | np.ndarray | None = None) -> VerifyReport:
    """Run inputs through every stage. ``inputs`` are floats (quantized by the model's input
    quantizer); ``codes`` are raw integer input codes used as they are (e.g. TFLite goldens).
    For TFLite builds the "qonnx" stage is the TFLite Micro reference, when installed."""
    build_dir = Path(build_dir).resolve()  # the runners execute in temporary directories
    manifest = load_manifest(build_dir)
    # --- FPGA builds (issue 7): simulator, qonnx, hls4ml C-simulation; edgekit/backends/hls ---
    if manifest.get("backend") == "hls":
        from .backends.hls import verify_hls

        return verify_hls(build_dir, inputs=inputs, count=count, seed=seed, stages=stages, codes=codes)
    # --- end FPGA ---
    graph = Graph.load(build_dir)
    if "qemu" in stages:
        tc.qemu()  # a missing emulator is an error before any work, not a skipped stage

    tflite = manifest.get("frontend") == "tflite"
    if codes is not None and inputs is not None:
        raise VerificationError("give float inputs or input codes, not both")
    if codes is not None:
        codes, source = _load_codes(graph, codes)
        x = None
    else:
        x, source = load_float_inputs(graph, inputs, count, seed)
        codes = quantize_input(graph, x)
    n = int(codes.shape[0])
    out_t = graph.tensors[graph.outputs[0]]
    ref = simulate(graph, codes)[graph.outputs[0]].reshape(n, -1)
    results = [StageResult("simulator", True, int(ref.size), 0, 0, "reference")]
    memory = dict(manifest["memory"], arena_bytes=manifest["arena_bytes"])
    requant_exact = all(n.attrs["requant"].exact for n in graph.nodes if n.attrs.get("requant") is not None)
    pow2 = requant_exact and is_power_of_two(graph.input_quant.scale)

    if tflite and "qonnx" in stages:  # the reference stage of a TFLite build
        if _tflite_reference_available():
            got = _run_tflite_reference(build_dir / "model.tflite", codes, graph, floats=x)
            results.append(_compare("tflite reference", got, ref, True, "TFLite Micro interpreter"))
        else:
            results.append(StageResult("tflite reference", False, 0, 0, 0, "skipped: no TFLite Micro interpreter "
                                       "(pip install tflite-micro, x86-64 Linux)"))
    elif "qonnx" in stages and x is None:
        results.append(StageResult("qonnx (float32)", False, 0, 0, 0, "skipped: input codes bypass the input "
                                   "quantizer"))
    elif "qonnx" in stages:
        results.append(qonnx_stage(build_dir / "model.onnx", graph, x, ref, pow2))

    out_count = out_t.size
    if "host" in stages:
        exe = build_dir / manifest["host_runner"]
        got, _ = _run_binary(lambda w: tc.run_host(exe, w), codes, manifest["input"]["dtype"], out_count,
                             out_t.dtype)
        results.append(_compare("host C", got, ref, True))
    if "qemu" in stages:
        machine = manifest["qemu_machine"]
        if not machine:
            raise VerificationError(f"board {manifest['board']} cannot be emulated; flash it instead")
        elf = build_dir / manifest["firmware"]
        got, log = _run_binary(lambda w: tc.run_qemu(elf, machine, w), codes, manifest["input"]["dtype"],
                               out_count, out_t.dtype)
        measured = {"EK_STACK_USED": "stack_used_bytes", "EK_INFERENCE_STACK": "inference_stack_bytes",
                    "EK_ARENA_TOUCHED": "arena_touched_bytes"}
        for line in log.splitlines():
            key, _, value = line.partition("=")
            if key in measured and value.strip().isdigit():
                memory[measured[key]] = int(value)
        results.append(_compare(f"firmware ({machine})", got, ref, True))

    return VerifyReport(str(build_dir), manifest["board"], n, source, list(out_t.shape), results,
                        memory, extra={"power_of_two": pow2, "frontend": manifest.get("frontend", "qonnx")})
