"""``edgekit bench zoo``: build and verify every zoo model; peak RAM against TFLM's arena.

Peak RAM here is everything inference needs: the planned arena, the input and output
buffers (TFLM keeps those inside its arena) and the stack the firmware really used
(painted high-water mark on the emulated board). TFLM figures are the recorded
TFLM + CMSIS-NN measurements in ../shared/peers/mlperf_tiny/results.json.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..backends.cortexm.memory import io_buffer_bytes
from ..progress import track
from .suites import peers_dir, suite


def run_zoo(models: list[str] | None = None, board: str = "mps2-an386", target: str = "cortex-m4",
            count: int = 16, out: Path | None = None) -> list[dict]:
    import torch

    from ..api import build, verify
    from ..qat import export_qonnx
    from ..qat.zoo import MLPERF_REFERENCE, ZOO, calibrate

    peers = {}
    pd = peers_dir()
    if pd and (pd / "mlperf_tiny" / "results.json").is_file():
        peers = json.loads((pd / "mlperf_tiny" / "results.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        work = Path(out) if out else Path(tmp)
        for name in track(models or list(ZOO), "bench zoo: models"):
            t0 = time.monotonic()
            torch.manual_seed(0)  # seeded weights: the same model on every run
            model = calibrate(ZOO[name]())
            onnx_path = export_qonnx(model, torch.zeros(1, *model.input_shape), work / f"{name}.onnx")
            res = build(onnx_path, target, board, work / name)
            rep = verify(work / name, count=count)
            m = res.manifest
            io = io_buffer_bytes(m)  # 0: the input and output are inside the arena
            stack = rep.memory.get("inference_stack_bytes", rep.memory.get("stack_used_bytes", 0))
            peak = m.arena_bytes + io + stack
            row = {"model": name, "macs": m.macs, "arena_bytes": m.arena_bytes, "io_bytes": io,
                   "stack_bytes": stack, "peak_ram_bytes": peak, "flash_bytes": m.memory["flash_bytes"],
                   "weight_bytes": m.weight_bytes, "bit_exact": rep.ok and all(s.mismatches == 0 for s in rep.stages),
                   "seconds": round(time.monotonic() - t0, 1)}
            ref = peers.get(MLPERF_REFERENCE.get(name, ""), {}).get("tflm_cmsis_nn_m4")
            if ref:
                row["tflm_arena_bytes"] = ref["arena_used_bytes"]
                row["ram_ratio"] = round(peak / ref["arena_used_bytes"], 3)
                row["reference_macs"] = peers[MLPERF_REFERENCE[name]]["macs"]
            rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'model':<18}{'MACs':>10}{'arena':>8}{'in+out':>8}{'stack':>7}{'peak RAM':>10}{'TFLM arena':>12}"
            f"{'ratio':>7}{'flash':>9}  exact")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<18}{r['macs']:>10}{r['arena_bytes']:>8}{r['io_bytes']:>8}{r['stack_bytes']:>7}"
                     f"{r['peak_ram_bytes']:>10}{r.get('tflm_arena_bytes', '-'):>12}"
                     f"{(str(r['ram_ratio']) + 'x') if 'ram_ratio' in r else '-':>7}{r['flash_bytes']:>9}  "
                     f"{'yes' if r['bit_exact'] else 'NO'}")
    lines.append("in+out: input and output buffers outside the arena (0: inside it, edgekit build's default); "
                 "peak RAM = arena + in+out + measured inference stack")
    return "\n".join(lines)


@suite("zoo")
def main(args) -> int:
    rows = run_zoo(args.models.split(",") if args.models else None, count=args.count)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0 if all(r["bit_exact"] for r in rows) else 1
