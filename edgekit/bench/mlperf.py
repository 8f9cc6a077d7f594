"""``edgekit bench mlperf-tiny``: the three MLPerf Tiny int8 models against TFLM + CMSIS-NN.

For each model in ../shared/peers/mlperf_tiny (keyword spotting DS-CNN, ResNet-8, the anomaly
detection FC autoencoder), edgekit's TFLite import is built for cortex-m4 / mps2-an386 twice,
with the reference and with the optimized (DSP-extension) kernels, and each build is

* checked bit for bit against the TFLite Micro goldens (the 20 golden inputs and the fixed
  input, through the host C and the firmware on QEMU: ``edgekit verify --codes``);
* profiled: executed instructions of one ``ek_model_run`` call on QEMU (``edgekit profile``)
  for the peer's fixed input (its 32-bit LCG, reproduced below), next to TFLM + CMSIS-NN's
  ``invoke_instructions`` for one ``Invoke()`` on the same emulated board (results.json);
* measured: peak RAM = planned arena + input and output buffers (TFLM keeps those in its
  arena) + the stack the inference really used (measured on the board), against the TFLM
  arena; code flash = everything in flash but the weights (model code + runtime), against
  TFLM's library code (``tflm_text + cmsis_nn_text``, which excludes libc and main); whole
  flash (vectors, .text, .rodata, .data of the firmware) against TFLM's whole firmware; the
  model's constants in flash against its int8 parameter bytes (int8 weights, int32 biases);
* broken down: instructions per MAC per layer kind (depthwise 3x3, pointwise, first
  convolutions with few input channels, 1x1 shortcuts with fused adds, dense), and the layers
  on a slower kernel than theirs (``kernel_fallbacks``), with the reason.

Goals (issue 16, judged per optimized row by ``judge_goals``): instructions <= 0.4x TFLM + CMSIS-NN
under size/balanced (0.6x for a model of dense layers only, AD) and <= 0.33x under speed; peak RAM
<= 0.6x the TFLM arena; whole flash under size/balanced <= 1.05x the int8 parameter bytes + 24 KiB;
depthwise 3x3 <= 1.5 instructions per MAC under balanced; a convolution-heavy model (most MACs in
convolutions) <= 0.9 instructions per MAC on the Cortex-M4 under balanced; on a Helium core (M55)
<= 0.6 instructions per MAC. Goals without a figure to judge them by (no peer) are left out.

The fourth MLPerf Tiny model, visual wake words (MobileNetV1 0.25), has no recorded peer
figures. It is measured too: the reference ``vww_96_int8.tflite`` when it lies in the peers
folder or is passed with ``--vww-model``, otherwise a stand-in of the same architecture made
with TensorFlow (vww_keras.py, the ``keras`` extra). Its goldens are TFLite Micro's outputs,
computed in the same run (the ``tflite-ref`` extra); it has no peer instruction or flash ratios.
Its peak RAM is set against TFLM's arena for the same file measured in the run (tflm_arena.py:
TFLM's RecordingMicroAllocator in the tflite-micro package on x86-64; every model's row carries
that figure too, so the output states how it compares with the recorded Cortex-M arenas).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backends.cortexm.kernels.base import DEFAULT_OPTIMIZE, format_fallbacks
from ..backends.cortexm.memory import io_buffer_bytes
from ..manifest import Manifest
from ..progress import track
from .suites import peers_dir, suite
from .tflm_arena import SOURCE as TFLM_ARENA_SOURCE, tflm_arena

#: short name -> (results.json key, file stem in ../shared/peers/mlperf_tiny)
MODELS = {
    "kws": ("keyword_spotting_ds_cnn", "kws_ref_model"),
    "resnet": ("image_classification_resnet8", "pretrainedResnet_quant"),
    "ad": ("anomaly_detection_fc_autoencoder", "ad01_int8"),
    "vww": ("visual_wake_words_mobilenet_v1", "vww_96_int8"),
}
#: issue 16's goals (see judge_goals)
INSTR_RATIO_GOAL = {"size": 0.4, "balanced": 0.4, "speed": 0.33}
DENSE_ONLY_INSTR_RATIO_GOAL = 0.6
RAM_RATIO_GOAL = 0.6
FLASH_PARAM_FACTOR, FLASH_CODE_ALLOWANCE = 1.05, 24 * 1024
DEPTHWISE_3X3_PER_MAC_GOAL = 1.5
CONV_HEAVY_PER_MAC_GOAL = 0.9
HELIUM_PER_MAC_GOAL = 0.6
#: core -> the results.json entry of TFLM + CMSIS-NN measured on it (QEMU mps2-an386 / mps2-an500)
PEER_KEYS = {"cortex-m4": "tflm_cmsis_nn_m4", "cortex-m7": "tflm_cmsis_nn_m7"}
KERNEL_SETS = ("reference", "optimized")


def fixed_input(n: int) -> np.ndarray:
    """The peer's fixed input (results.json _meta): int8 bytes from a 32-bit LCG,
    s = 0x12345678; per byte s = s * 1664525 + 1013904223 (mod 2^32), byte = (int8)(s >> 24)."""
    out = np.empty(n, np.int64)
    s = 0x12345678
    for i in range(n):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        out[i] = ((s >> 24) ^ 0x80) - 0x80
    return out


def _golden(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.load(folder / f"{stem}_golden.npz")
    codes = np.concatenate([d["inputs"].reshape(len(d["inputs"]), -1), d["fixed_input"].reshape(1, -1)])
    want = np.concatenate([d["outputs"].reshape(len(d["outputs"]), -1), d["fixed_output"].reshape(1, -1)])
    return codes.astype(np.int64), want.astype(np.int64), d["fixed_input"].reshape(-1).astype(np.int64)


#: results.json's firmware sections that occupy flash (size -A of TFLM's firmware ELF)
TFLM_FLASH_SECTIONS = ("fw_text", "fw_rodata", "fw_data", "fw_isr_vector", "fw_other_flash")


def layer_kind(node, graph) -> str:
    """The kind of layer whose instructions per MAC the bench reports (issue 16's gaps: depthwise
    3x3, pointwise, first convolutions with few input channels, 1x1 shortcuts with fused adds)."""
    a = node.attrs
    if node.op == "conv2d":
        kh, kw = a["kernel"]
        if a["depthwise"]:
            return f"depthwise {kh}x{kw}"
        if (kh, kw) == (1, 1):
            return "pointwise 1x1" + (" + add" if a.get("residual") else "")
        cin = graph.tensors[node.inputs[0]].shape[-1]
        return f"conv {kh}x{kw}" + (f" ({cin} input channel{'s' if cin > 1 else ''})" if cin <= 4 else "")
    return "dense" if node.op == "dense" else "other"


def per_kind(graph, layers: list[dict]) -> dict:
    """kind -> MACs, instructions and instructions per MAC of the profiled layers of that kind."""
    nodes = {n.name: n for n in graph.nodes}
    kinds: dict[str, dict] = {}
    for r in layers:
        node = nodes.get(r["name"])
        k = kinds.setdefault(layer_kind(node, graph) if node is not None else "other",
                             {"layers": 0, "macs": 0, "instructions": 0})
        k["layers"] += 1
        k["macs"] += r["macs"]
        k["instructions"] += r["instructions"]
    for k in kinds.values():
        k["instr_per_mac"] = round(k["instructions"] / k["macs"], 3) if k["macs"] else None
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["instructions"]))


def int8_parameter_bytes(graph) -> int:
    """The model's parameters as TFLite stores them: int8 weights and int32 biases of the layers with weights."""
    from ..ir.operators import get_op

    names = {t for n in graph.nodes if get_op(n.op, n.name).packs_weights for t in n.inputs[1:3]
             if t in graph.constants}
    return int(sum(graph.constants[t].size * (1 if graph.tensors[t].bits <= 8 else 4) for t in names))


def measure(tflite: Path, work: Path, kernels: str, peer: dict, golden, target: str = "cortex-m4",
            board: str = "mps2-an386", optimize: str | None = None, io_buffers: str | None = None) -> dict:
    """Build, check against the goldens, profile and measure one model with one kernel set
    (``optimize``: edgekit build --optimize for the optimized kernels; None: its default;
    ``io_buffers``: edgekit build --io-buffers, None: its default, input and output in the arena)."""
    from ..api import build, verify
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph
    from ..sim import quantize_input, simulate

    t0 = time.monotonic()
    out = work / f"{tflite.stem}-{kernels}"
    res = build(tflite, target, board, out, kernels=kernels, optimize=optimize if kernels == "optimized" else None,
                io_buffers=io_buffers)
    m = res.manifest
    graph = Graph.load(out)
    shape = graph.tensors[graph.inputs[0]].shape
    codes, want, fixed = golden
    rep = verify(out, codes=codes.reshape((-1,) + tuple(shape)))
    stages = {s.stage.split(" ")[0]: s for s in rep.stages}
    sim = simulate(graph, codes.reshape((-1,) + tuple(shape)))[graph.outputs[0]].reshape(len(codes), -1)
    exact = (rep.ok and np.array_equal(sim, want)
             and all(stages[k].mismatches == 0 and stages[k].elements == want.size for k in ("host", "firmware")))
    # one inference on the fixed input: float inputs that quantize back to exactly these codes
    iq = graph.input_quant
    x = ((fixed - iq.zero_point) * np.float64(iq.scale)).astype(np.float32).reshape((1,) + tuple(iq.float_shape))
    assert np.array_equal(quantize_input(graph, x).reshape(-1), fixed), "fixed input does not round-trip"
    prof = profile(out, board=board, inputs=x).to_json()
    instr = prof["total"]["instructions"]
    fl = m.memory_breakdown["flash"]
    stack = rep.memory.get("inference_stack_bytes", m.memory.get("inference_stack_static_bytes", 0))
    io = io_buffer_bytes(m)
    peak = m.arena_bytes + io + stack
    # the peer's run on the same core (results.json has the Cortex-M4 and the Cortex-M7)
    tf = (peer or {}).get(PEER_KEYS.get(target, ""))
    # the library code of TFLM + CMSIS-NN (recorded for the M4 run only)
    tflm_code = (tf["text_breakdown"]["tflm_text"] + tf["text_breakdown"]["cmsis_nn_text"]
                 if tf and "text_breakdown" in tf else None)
    tflm_flash = sum(tf.get(k, 0) for k in TFLM_FLASH_SECTIONS) if tf else None
    params = int8_parameter_bytes(graph)
    # TFLM's arena for this file measured now (bench/tflm_arena.py): the RAM peer where none is recorded
    x86 = tflm_arena(tflite)
    arena_peer = tf["arena_used_bytes"] if tf else x86 and x86["total"]

    def ratio(a, b):
        return round(a / b, 3) if b else None

    row = {
        "model": tflite.stem, "kernels": kernels, "optimize": (optimize or DEFAULT_OPTIMIZE) if kernels == "optimized"
        else None, "macs": m.macs, "bit_exact_golden": bool(exact),
        "golden_vectors": int(len(codes)),
        "instructions": instr, "tflm_instructions": tf["invoke_instructions"] if tf else None,
        "instr_ratio": ratio(instr, tf and tf["invoke_instructions"]), "instr_per_mac": round(instr / m.macs, 3),
        "est_cycles": prof["total"]["est_cycles"],
        "io_buffers": m.io_buffers, "arena_bytes": m.arena_bytes, "io_bytes": io, "inference_stack_bytes": stack,
        "peak_ram_bytes": peak, "tflm_arena_bytes": arena_peer or None,
        "tflm_arena_source": "recorded (results.json)" if tf else TFLM_ARENA_SOURCE if x86 else None,
        "tflm_x86_arena_bytes": x86 and x86["total"], "tflm_x86_arena_head_bytes": x86 and x86["head"],
        "ram_ratio": ratio(peak, arena_peer),
        "model_code_bytes": fl["code"], "runtime_bytes": fl["runtime"], "code_flash_bytes": fl["total"] - fl["weights"],
        "tflm_library_code_bytes": tflm_code, "code_ratio": ratio(fl["total"] - fl["weights"], tflm_code),
        "weight_bytes": fl["weights"], "flash_bytes": fl["total"],
        "tflm_flash_bytes": tflm_flash, "flash_ratio": ratio(fl["total"], tflm_flash),
        "int8_parameter_bytes": params, "constants_ratio": ratio(fl["weights"], params),
        "kernel_fallbacks": m.kernel_fallbacks or [],
        "layers": [{"name": r["name"], "op": r["op"], "macs": r["macs"], "instructions": r["instructions"],
                    "kernel": next((L.get("kernel", "") for L in m.layers if L["name"] == r["name"]), "")}
                   for r in prof["layers"]],
        "seconds": round(time.monotonic() - t0, 1),
    }
    row["kinds"] = per_kind(graph, row["layers"])
    row["goals"] = judge_goals(row, target) if kernels == "optimized" else {}
    row["goals_met"] = {k: g["met"] for k, g in row["goals"].items()}
    return row


def judge_goals(row: dict, target: str) -> dict:
    """goal name -> {"value", "limit", "met"} for one optimized row (issue 16's goals; see the module
    docstring). A goal that needs a peer figure the row lacks (VWW) is left out, not guessed."""
    mode = row["optimize"] or DEFAULT_OPTIMIZE
    goals: dict[str, dict] = {}

    def add(name, value, limit):
        if value is not None:
            goals[name] = {"value": value, "limit": limit, "met": bool(value <= limit)}

    kinds = row["kinds"]
    macs = row["macs"] or 1
    dense_only = all(k in ("dense", "other") for k in kinds)
    conv_macs = sum(v["macs"] for k, v in kinds.items() if k not in ("dense", "other"))
    limit = DENSE_ONLY_INSTR_RATIO_GOAL if dense_only and mode != "speed" else INSTR_RATIO_GOAL[mode]
    add("instructions", row["instr_ratio"], limit)
    add("peak RAM", row["ram_ratio"], RAM_RATIO_GOAL)
    if mode != "speed":
        add("whole flash", row["flash_bytes"],
            int(FLASH_PARAM_FACTOR * row["int8_parameter_bytes"] + FLASH_CODE_ALLOWANCE))
    if mode == "balanced":
        dw = kinds.get("depthwise 3x3")
        add("depthwise 3x3 instr/MAC", dw and dw["instr_per_mac"], DEPTHWISE_3X3_PER_MAC_GOAL)
        if target == "cortex-m4" and conv_macs > macs / 2:
            add("instr/MAC", row["instr_per_mac"], CONV_HEAVY_PER_MAC_GOAL)
    if target == "cortex-m55":
        add("instr/MAC (Helium)", row["instr_per_mac"], HELIUM_PER_MAC_GOAL)
    return goals


def _vww_model(folder: Path | None, work: Path, given: str | None) -> tuple[Path, str]:
    """The VWW .tflite to measure and where it came from."""
    if given:
        path = Path(given)
        if not path.is_file():
            from ..errors import BuildDirError
            raise BuildDirError(f"--vww-model {given}: no such file")
        return path, "given with --vww-model"
    if folder is not None and (folder / "vww_96_int8.tflite").is_file():
        return folder / "vww_96_int8.tflite", "MLPerf Tiny reference"
    from .vww_keras import make_vww_tflite
    return make_vww_tflite(work / "vww_96_int8.tflite"), "stand-in made with TensorFlow (random weights)"


def _tflm_golden(path: Path, n: int = 20, seed: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Golden outputs from the TFLite Micro interpreter, computed now: n seeded random inputs and
    the peer's fixed LCG input, as for the three recorded models."""
    from ..errors import ToolchainError
    from ..frontends.tflite.reader import load_tflite
    from ..stages import run_tflite_reference, tflite_reference_available

    if not tflite_reference_available():
        raise ToolchainError("the visual wake words goldens come from TFLite Micro's interpreter: pip install "
                             "'edgekit[tflite-ref]' (x86-64 Linux)")
    _, model = load_tflite(path)
    sub = model.Subgraphs(0)
    shape = tuple(int(d) for d in sub.Tensors(int(sub.InputsAsNumpy()[0])).ShapeAsNumpy())[1:]
    size = int(np.prod(shape))
    fixed = fixed_input(size)
    codes = np.concatenate([np.random.default_rng(seed).integers(-128, 128, (n, size)), fixed[None]])
    want = run_tflite_reference(path, codes.reshape((-1,) + shape))
    return codes, want, fixed


def run_mlperf(models: list[str] | None = None, kernel_sets=KERNEL_SETS, out: Path | None = None,
               vww_model: str | None = None, notes: list[str] | None = None,
               board: str = "mps2-an386", optimize: str | None = None, io_buffers: str | None = None) -> list[dict]:
    from ..errors import BuildDirError, ToolchainError

    names = models or list(MODELS)
    for n in names:
        if n not in MODELS:
            raise BuildDirError(f"unknown MLPerf Tiny model '{n}': choose from {', '.join(MODELS)}")
    pd = peers_dir()
    folder = pd / "mlperf_tiny" if pd else None
    have_peers = folder is not None and (folder / "results.json").is_file()
    if not have_peers and names != ["vww"]:
        raise BuildDirError("edgekit bench mlperf-tiny needs ../shared/peers/mlperf_tiny (the models, goldens and "
                            "results.json) beside the repository")
    peers = json.loads((folder / "results.json").read_text()) if have_peers else {}
    notes = notes if notes is not None else []
    from ..targets import emulated_boards, get_board
    brd = get_board(board)
    target = brd.core
    if not brd.emulated:
        raise BuildDirError(f"edgekit bench counts instructions on an emulated board; {board} is a real board "
                            f"with a {target}: use --board {' or '.join(emulated_boards(target)) or 'an emulated board'}")
    if target not in PEER_KEYS:
        notes.append(f"{target}: no recorded TFLM + CMSIS-NN figures for this core (results.json has "
                     f"{', '.join(PEER_KEYS)}), so no ratios")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-mlperf-") as tmp:
        work = Path(out) if out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in track(names, "bench mlperf-tiny: models"):
            key, stem = MODELS[n]
            if n == "vww":
                try:
                    path, origin = _vww_model(folder, work, vww_model)
                    golden = _tflm_golden(path)
                except ToolchainError as e:
                    if models:  # asked for by name: an error; in the default run: a note
                        raise
                    notes.append(f"vww: not measured ({e})")
                    continue
                notes.append(f"vww: {origin}; goldens from the TFLite Micro interpreter in this run; no recorded "
                             "TFLM + CMSIS-NN figures, so no instruction or flash ratios; peak RAM against TFLM's "
                             "arena measured in this run")
            else:
                path, golden = folder / f"{stem}.tflite", _golden(folder, stem)
            for k in kernel_sets:
                rows.append(measure(path, work, k, peers.get(key), golden, target=target, board=board,
                                    optimize=optimize, io_buffers=io_buffers))
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'model':<24}{'kernels':<10}{'instructions':>13}{'TFLM+CMSIS':>12}{'ratio':>7}{'instr/MAC':>10}"
            f"{'peak RAM':>9}{'TFLM arena':>11}{'ratio':>7}{'code flash':>11}{'TFLM code':>10}{'ratio':>7}"
            f"{'weights':>9}{'whole flash':>12}{'TFLM fw':>9}{'ratio':>7}{'const/param':>12}  exact")
    lines = [head, "-" * len(head)]
    def num(v, width):
        return f"{v:>{width},}" if v is not None else f"{'-':>{width}}"

    def x(v):
        return f"{v:>6.3f}x" if v is not None else f"{'-':>7}"

    for r in rows:
        lines.append(f"{r['model']:<24}{r['kernels']:<10}{r['instructions']:>13,}{num(r['tflm_instructions'], 12)}"
                     f"{x(r['instr_ratio'])}{r['instr_per_mac']:>10.3f}{r['peak_ram_bytes']:>9,}"
                     f"{num(r['tflm_arena_bytes'], 11)}{x(r['ram_ratio'])}{r['code_flash_bytes']:>11,}"
                     f"{num(r['tflm_library_code_bytes'], 10)}{x(r['code_ratio'])}{r['weight_bytes']:>9,}"
                     f"{r['flash_bytes']:>12,}{num(r['tflm_flash_bytes'], 9)}{x(r['flash_ratio'])}"
                     f"{x(r['constants_ratio']):>12}  {'yes' if r['bit_exact_golden'] else 'NO'}")
    lines.append("goals (issue 16, optimized kernels): value / limit")
    for r in rows:
        if r["kernels"] == "optimized" and r.get("goals"):
            parts = [f"{k} {_goal_value(g['value'])} / {_goal_value(g['limit'])} {'met' if g['met'] else 'NOT met'}"
                     for k, g in r["goals"].items()]
            lines.append(f"  {r['model']} ({r['optimize']}): " + "; ".join(parts))
    lines.extend(_arena_notes(rows))
    lines.append("instructions per MAC by layer kind (share of the instructions):")
    for r in rows:
        total = r["instructions"] or 1
        parts = [f"{k} {v['instr_per_mac']:.2f} ({100 * v['instructions'] / total:.0f}%)" if v["instr_per_mac"]
                 else f"{k} ({100 * v['instructions'] / total:.0f}%)" for k, v in r["kinds"].items()]
        lines.append(f"  {r['model']} {r['kernels']}{' ' + r['optimize'] if r['optimize'] else ''}: " + ", ".join(parts))
        if r["kernel_fallbacks"]:
            lines.append(f"    {format_fallbacks(r['kernel_fallbacks'])}")
    lines.append("whole flash: vectors + .text + .rodata + .data of the firmware vs TFLM's (results.json fw_*); "
                 "const/param: the model's constants in flash (weights, biases, requantization records) vs its "
                 "int8 parameter bytes (int8 weights, int32 biases)")
    lines.append("instructions: one ek_model_run (edgekit profile) vs one Invoke() (TFLM), both on the same QEMU board "
                 "with the peer's fixed LCG input; peak RAM = arena (input and output inside it; with --io-buffers "
                 "caller builds + the caller's input/output) + measured inference stack; "
                 "code flash = flash - weights (model code + runtime) vs tflm_text + cmsis_nn_text; exact = host C "
                 "and firmware equal the TFLite Micro goldens (20 + fixed input)")
    peer_ipm = [r["tflm_instructions"] / r["macs"] for r in rows if r["tflm_instructions"]]
    if peer_ipm:
        lines.append(f"TFLM + CMSIS-NN executes {min(peer_ipm):.2f} to {max(peer_ipm):.2f} instructions per MAC on "
                     "the models above that have peer figures")
    return "\n".join(lines)


def _goal_value(v) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:.3f}"


def _arena_notes(rows: list[dict]) -> list[str]:
    """Where a TFLM arena was measured in this run (no recorded figure): its parts, peak RAM against
    its activation part alone (a lower bound of TFLM's arena on any core), and how the x86 figure
    compares with the recorded Cortex-M arenas of the other models."""
    calib = [r["tflm_x86_arena_bytes"] / r["tflm_arena_bytes"] for r in rows
             if r["tflm_arena_source"] == "recorded (results.json)" and r["tflm_x86_arena_bytes"]]
    out = []
    for r in rows:
        if r["tflm_arena_source"] != TFLM_ARENA_SOURCE or r["kernels"] != "optimized":
            continue
        head = r["tflm_x86_arena_head_bytes"]
        out.append(f"  {r['model']}: TFLM arena {r['tflm_arena_bytes']:,} B ({TFLM_ARENA_SOURCE}), "
                   f"of which {head:,} B planned activations and scratch; peak RAM {r['peak_ram_bytes'] / head:.3f}x "
                   f"that part alone"
                   + (f"; on the recorded models the x86 figure is {min(calib):.2f}-{max(calib):.2f}x the Cortex-M "
                      "arena" if calib else ""))
    return out


@suite("mlperf-tiny")
def main(args) -> int:
    models = args.models.split(",") if getattr(args, "models", None) else None
    notes: list[str] = []
    rows = run_mlperf(models, vww_model=getattr(args, "vww_model", None), notes=notes,
                      board=getattr(args, "board", None) or "mps2-an386", optimize=getattr(args, "optimize", None),
                      io_buffers=getattr(args, "io_buffers", None))
    if args.json:
        print(json.dumps({"rows": rows, "notes": notes}, indent=1))
    else:
        print(format_rows(rows))
        for n in notes:
            print(n)
    return 0 if all(r["bit_exact_golden"] for r in rows) else 1
