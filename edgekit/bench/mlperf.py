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
  TFLM's library code (``tflm_text + cmsis_nn_text``, which excludes libc and main).

Goals (issue 6): instructions <= 0.5x TFLM + CMSIS-NN, peak RAM <= 0.7x the TFLM arena,
code flash <= 0.25x TFLM's library code, on every model.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from . import peers_dir, suite

#: short name -> (results.json key, file stem in ../shared/peers/mlperf_tiny)
MODELS = {
    "kws": ("keyword_spotting_ds_cnn", "kws_ref_model"),
    "resnet": ("image_classification_resnet8", "pretrainedResnet_quant"),
    "ad": ("anomaly_detection_fc_autoencoder", "ad01_int8"),
}
GOALS = {"instructions": 0.5, "ram": 0.7, "code": 0.25}
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


def _io_bytes(manifest: dict) -> int:
    def n(desc):
        shape = desc.get("float_shape") or desc.get("shape")
        return int(np.prod(shape)) * np.dtype(desc["dtype"]).itemsize
    return n(manifest["input"]) + n(manifest["output"])


def measure(tflite: Path, work: Path, kernels: str, peer: dict, golden, target: str = "cortex-m4",
            board: str = "mps2-an386") -> dict:
    """Build, check against the goldens, profile and measure one model with one kernel set."""
    from ..api import build, verify
    from ..backends.cortexm.profile import profile
    from ..ir.graph import Graph
    from ..sim import quantize_input, simulate

    t0 = time.monotonic()
    out = work / f"{tflite.stem}-{kernels}"
    res = build(tflite, target, board, out, kernels=kernels)
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
    fl = m["memory_breakdown"]["flash"]
    stack = rep.memory.get("inference_stack_bytes", m["memory"].get("inference_stack_static_bytes", 0))
    peak = m["arena_bytes"] + _io_bytes(m) + stack
    tf = peer["tflm_cmsis_nn_m4"]
    tflm_code = tf["text_breakdown"]["tflm_text"] + tf["text_breakdown"]["cmsis_nn_text"]
    row = {
        "model": tflite.stem, "kernels": kernels, "macs": m["macs"], "bit_exact_golden": bool(exact),
        "golden_vectors": int(len(codes)),
        "instructions": instr, "tflm_instructions": tf["invoke_instructions"],
        "instr_ratio": round(instr / tf["invoke_instructions"], 3), "instr_per_mac": round(instr / m["macs"], 3),
        "est_cycles": prof["total"]["est_cycles"],
        "arena_bytes": m["arena_bytes"], "io_bytes": _io_bytes(m), "inference_stack_bytes": stack,
        "peak_ram_bytes": peak, "tflm_arena_bytes": tf["arena_used_bytes"],
        "ram_ratio": round(peak / tf["arena_used_bytes"], 3),
        "model_code_bytes": fl["code"], "runtime_bytes": fl["runtime"], "code_flash_bytes": fl["total"] - fl["weights"],
        "tflm_library_code_bytes": tflm_code, "code_ratio": round((fl["total"] - fl["weights"]) / tflm_code, 3),
        "weight_bytes": fl["weights"],
        "layers": [{"name": r["name"], "op": r["op"], "macs": r["macs"], "instructions": r["instructions"],
                    "kernel": next((L.get("kernel", "") for L in m["layers"] if L["name"] == r["name"]), "")}
                   for r in prof["layers"]],
        "seconds": round(time.monotonic() - t0, 1),
    }
    row["goals_met"] = {"instructions": row["instr_ratio"] <= GOALS["instructions"],
                        "ram": row["ram_ratio"] <= GOALS["ram"], "code": row["code_ratio"] <= GOALS["code"]}
    return row


def run_mlperf(models: list[str] | None = None, kernel_sets=KERNEL_SETS, out: Path | None = None) -> list[dict]:
    from ..errors import BuildDirError

    pd = peers_dir()
    folder = pd / "mlperf_tiny" if pd else None
    if folder is None or not (folder / "results.json").is_file():
        raise BuildDirError("edgekit bench mlperf-tiny needs ../shared/peers/mlperf_tiny (the models, goldens and "
                            "results.json) beside the repository")
    peers = json.loads((folder / "results.json").read_text())
    names = models or list(MODELS)
    for n in names:
        if n not in MODELS:
            raise BuildDirError(f"unknown MLPerf Tiny model '{n}': choose from {', '.join(MODELS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-mlperf-") as tmp:
        work = Path(out) if out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in names:
            key, stem = MODELS[n]
            golden = _golden(folder, stem)
            for k in kernel_sets:
                rows.append(measure(folder / f"{stem}.tflite", work, k, peers[key], golden))
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'model':<24}{'kernels':<10}{'instructions':>13}{'TFLM+CMSIS':>12}{'ratio':>7}{'instr/MAC':>10}"
            f"{'peak RAM':>9}{'TFLM arena':>11}{'ratio':>7}{'code flash':>11}{'TFLM code':>10}{'ratio':>7}"
            f"{'weights':>9}  exact")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<24}{r['kernels']:<10}{r['instructions']:>13,}{r['tflm_instructions']:>12,}"
                     f"{r['instr_ratio']:>6.3f}x{r['instr_per_mac']:>10.3f}{r['peak_ram_bytes']:>9,}"
                     f"{r['tflm_arena_bytes']:>11,}{r['ram_ratio']:>6.3f}x{r['code_flash_bytes']:>11,}"
                     f"{r['tflm_library_code_bytes']:>10,}{r['code_ratio']:>6.3f}x{r['weight_bytes']:>9,}  "
                     f"{'yes' if r['bit_exact_golden'] else 'NO'}")
    lines.append(f"goals (optimized kernels): instructions <= {GOALS['instructions']}x TFLM + CMSIS-NN, peak RAM <= "
                 f"{GOALS['ram']}x TFLM arena, code flash <= {GOALS['code']}x TFLM library code")
    for r in rows:
        if r["kernels"] == "optimized":
            miss = [k for k, ok in r["goals_met"].items() if not ok]
            lines.append(f"  {r['model']}: " + ("all met" if not miss else "NOT met: " + ", ".join(miss)))
    lines.append("instructions: one ek_model_run (edgekit profile) vs one Invoke() (TFLM), both on QEMU mps2-an386 "
                 "with the peer's fixed LCG input; peak RAM = arena + input/output + measured inference stack; "
                 "code flash = flash - weights (model code + runtime) vs tflm_text + cmsis_nn_text; exact = host C "
                 "and firmware equal the TFLite Micro goldens (20 + fixed input)")
    return "\n".join(lines)


@suite("mlperf-tiny")
def main(args) -> int:
    models = args.models.split(",") if getattr(args, "models", None) else None
    rows = run_mlperf(models)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0 if all(r["bit_exact_golden"] for r in rows) else 1
