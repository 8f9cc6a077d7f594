"""The table of ONNX files tried (docs/qonnx-files.md): each built and verified with edgekit for a
Cortex-M4 (mps2-an386) and an FPGA (pynq-z2), or refused with the reason edgekit gives.

The files: the QONNX model zoo's three files in ../shared/peers/qonnx_zoo (FINN's TFC_2W2A,
finn-examples' KWS MLP and UNSW-NB15 MLP), the same TFC after qonnx's own tools (`qonnx-cleanup`,
`qonnx-to-channels-last`), the FINN/Brevitas end-to-end test models of brevitas_examples.bnn_pynq
(TFC, SFC, LFC, CNV at 1W1A, 1W2A, 2W2A; untrained weights, BatchNorm statistics drawn from a fixed
seed so the thresholds fall inside the accumulators' range), a plain float PyTorch export, and the
models of hls4ml's own QONNX tests that can be made offline.

    PYTHONPATH=. python examples/qonnx_files.py --work /tmp/qonnx_files --write docs/qonnx-files.md
    PYTHONPATH=. python examples/qonnx_files.py --work /tmp/qonnx_files --only TFC_1W1A --targets fpga

Results go to <work>/results.json (one entry per file and target; reruns keep the others), and the
table is written from all of them. hls4ml's C-simulation compiles the network fully unrolled with
g++: files with more than --csim-max-weights weights are built for the FPGA but their C-simulation is
not run (said so in the table).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"cortex-m4": ("cortex-m4", "mps2-an386"), "fpga": ("fpga", "pynq-z2")}
BNN_PYNQ = ["TFC_1W1A", "TFC_1W2A", "TFC_2W2A", "SFC_1W1A", "SFC_1W2A", "SFC_2W2A", "LFC_1W1A", "LFC_1W2A",
            "CNV_1W1A", "CNV_1W2A", "CNV_2W2A"]


def zoo_dir() -> Path | None:
    from edgekit.bench import peers_dir

    d = peers_dir()
    return d / "qonnx_zoo" if d is not None and (d / "qonnx_zoo").is_dir() else None


def bnn_pynq(name: str, path: Path) -> Path:
    """brevitas_examples.bnn_pynq's model `name`, untrained, BatchNorm statistics from seed 0, as QONNX."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, cfg = model_with_cfg(name.lower(), pretrained=False)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
            m.running_mean.uniform_(-4, 4)
            m.running_var.uniform_(1, 16)
    channels = cfg.getint("MODEL", "IN_CHANNELS")
    size = 28 if name.startswith(("TFC", "SFC", "LFC")) else 32
    export_qonnx(model.eval(), input_t=torch.rand(1, channels, size, size), export_path=str(path), dynamo=False)
    return path


def float_export(path: Path) -> Path:
    """A float PyTorch model exported with torch.onnx (no quantizer anywhere)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(model, torch.zeros(1, 16), str(path), dynamo=False)
    return path


def qonnx_tool(tool: str, source: Path, path: Path) -> Path:
    if tool == "cleanup":
        from qonnx.util.cleanup import cleanup

        cleanup(str(source), out_file=str(path))
    else:  # qonnx's channels-last conversion needs the shapes its cleanup infers
        from qonnx.util.cleanup import cleanup
        from qonnx.util.to_channels_last import to_channels_last

        cleaned = path.with_name(path.stem + "_cleaned.onnx")
        cleanup(str(source), out_file=str(cleaned))
        to_channels_last(str(cleaned), out_file=str(path))
    return path


def files(work: Path) -> dict:
    """name -> (where it comes from, a function making the file in `work`)."""
    out = {}
    zoo = zoo_dir()
    for f in ("TFC_2W2A.onnx", "kwsmlp_w3a3.onnx", "unsw_nb15-mlp-w2a2.onnx"):
        if zoo is not None and (zoo / f).is_file():
            out[f"zoo/{f}"] = ("QONNX model zoo (../shared/peers/qonnx_zoo)", lambda f=f: zoo / f)
    if zoo is not None and (zoo / "TFC_2W2A.onnx").is_file():
        out["TFC_2W2A qonnx-cleanup"] = ("zoo TFC_2W2A after qonnx.util.cleanup",
                                         lambda: qonnx_tool("cleanup", zoo / "TFC_2W2A.onnx", work / "tfc_clean.onnx"))
        out["TFC_2W2A qonnx-to-channels-last"] = (
            "zoo TFC_2W2A after qonnx.util.to_channels_last",
            lambda: qonnx_tool("channels_last", zoo / "TFC_2W2A.onnx", work / "tfc_cl.onnx"))
    for name in BNN_PYNQ:
        out[f"bnn_pynq {name}"] = ("brevitas_examples.bnn_pynq (FINN's end-to-end tests), untrained",
                                   lambda name=name: bnn_pynq(name, work / f"{name}.onnx"))
    out["float PyTorch export"] = ("torch.onnx.export of a float MLP", lambda: float_export(work / "float.onnx"))
    return out


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def try_target(path: Path, target: str, out: Path, vectors: int, csim_max_weights: int) -> dict:
    from edgekit.api import build, verify
    from edgekit.errors import EdgekitError
    from edgekit.ir.graph import Graph

    core, board = TARGETS[target]
    t0 = time.monotonic()
    try:
        res = build(path, core, board, out)
    except EdgekitError as e:
        if not (out / "manifest.json").is_file():
            return {"status": "refused", "reason": first_line(e), "seconds": round(time.monotonic() - t0)}
        note = first_line(e)  # written but flagged (e.g. does not fit the part)
    else:
        note = "" if getattr(res.manifest, "fits", True) is not False else "does not fit pynq-z2 at reuse factor 1"
    graph = Graph.load(out)
    weights = int(sum(np.size(graph.constants[n.inputs[1]]) for n in graph.nodes
                      if n.op in ("dense", "conv2d") and len(n.inputs) > 1))
    skip = ()
    if target == "fpga" and weights > csim_max_weights:
        skip = ("csim",)
        note = (note + "; " if note else "") + f"C-sim not run ({weights} weights > {csim_max_weights})"
    try:
        rep = verify(out, count=vectors, seed=0, skip=skip)
    except EdgekitError as e:
        return {"status": "built, verify failed", "reason": first_line(e), "note": note, "weights": weights,
                "seconds": round(time.monotonic() - t0)}
    rows = [{"stage": s.stage, "must_be_exact": s.must_be_exact, "mismatches": s.mismatches,
             "elements": s.elements} for s in rep.stages if s.elements]
    return {"status": "verified" if rep.ok else "built, verify differs", "stages": rows, "note": note,
            "weights": weights, "seconds": round(time.monotonic() - t0)}


def cell(r: dict | None) -> str:
    if r is None:
        return "not run"
    if r["status"] == "refused":
        return f"refused: {r['reason']}"
    parts = []
    for s in r.get("stages", []):
        if s["stage"].startswith("simulator"):
            continue
        name = s["stage"].split(" (")[0]
        kind = "exact" if s["must_be_exact"] else "reported"
        parts.append(f"{name} {s['mismatches']}/{s['elements']} ({kind})")
    text = f"{r['status']}: " + ", ".join(parts) if parts else r["status"]
    if r.get("reason"):
        text += f" ({r['reason']})"
    if r.get("note"):
        text += f"; {r['note']}"
    return text.replace("|", "\\|")


def write_table(results: dict, sources: dict, path: Path, vectors: int) -> None:
    lines = ["# ONNX files tried", "",
             "Made by `examples/qonnx_files.py` (rerun it to refresh this page: `PYTHONPATH=. python "
             "examples/qonnx_files.py --work /tmp/qonnx_files --write docs/qonnx-files.md`). Each file is built "
             "with `edgekit build` for `cortex-m4`/`mps2-an386` and `fpga`/`pynq-z2` (reuse factor 1; whether "
             "it fits the part is noted, it is not what is tried here) and verified with `edgekit verify` on "
             f"{vectors} generated vectors. A cell gives each stage's mismatching elements against edgekit's "
             "simulator: `exact` where the integer contract makes the stage exact (it must be 0), `reported` "
             "where it does not (qonnx's float32 execution of a graph with float scales). Cortex-M stages: "
             "`qonnx`, `host C` (the generated C compiled for the host), `firmware` (on the board's QEMU); "
             "FPGA: `qonnx`, `hls4ml C-sim`.", "",
             "| file | where from | cortex-m4 / mps2-an386 | fpga / pynq-z2 |", "|---|---|---|---|"]
    names = list(sources) + [n for n in results if n not in sources]
    for name in names:
        res = results.get(name, {})
        lines.append(f"| {name} | {sources.get(name, '')} | {cell(res.get('cortex-m4'))} | {cell(res.get('fpga'))} |")
    lines += ["", "Which stages must be exact, and why: the generated C (`host C`, `firmware`) and the hls4ml "
              "C-simulation compute the integer contract, so they must equal the simulator for every file. "
              "qonnx's float32 execution must too when every scale is a power of two with zero point 0 "
              "(TFC_2W2A and the bnn_pynq models: their BatchNorms become integer thresholds found with qonnx's "
              "own float32 arithmetic); with float scales (kwsmlp_w3a3, unsw_nb15: per-channel float weight "
              "scales, float requantizations) qonnx rounds in float32 where edgekit uses Q31 multipliers, and "
              "its stage is reported, not required.", "",
              "Not tried, and why:", "",
              "* hls4ml's QKeras test models: QKeras is not installed (hls4ml[onnx] without [qkeras]); "
              "`qonnx.converters.from_keras` needs it. A QKeras-style model (float input, no input quantizer) "
              "made with Brevitas builds with `--input-bits` (docs/fpga.md, tests/test_hls_zoo.py).",
              "* qonnx's and hls4ml's test suites download their other files (`qonnx.util.test.download_model`); "
              "this machine is offline.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the files, builds and results.json")
    ap.add_argument("--only", nargs="*", help="file names (as in the table) to try; default all")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--vectors", type=int, default=16)
    ap.add_argument("--csim-max-weights", type=int, default=60000)
    ap.add_argument("--write", type=Path, help="write the Markdown table here")
    ap.add_argument("--merge", nargs="*", type=Path, default=[],
                    help="results.json files of other runs (e.g. run in parallel) to add to this one's")
    ap.add_argument("--no-run", action="store_true", help="only write the table from the stored results")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    for other in args.merge:
        if not other.is_file():
            print(f"{other}: no results there yet; skipped", file=sys.stderr)
            continue
        for name, by_target in json.loads(other.read_text()).items():
            results.setdefault(name, {}).update(by_target)
    store.write_text(json.dumps(results, indent=1))
    catalogue = files(args.work)
    import shutil

    for name, (source, make) in catalogue.items():
        if args.no_run or (args.only and name not in args.only):
            continue
        try:
            path = make()
        except Exception as e:  # a file that cannot be made is a row too
            results[name] = {t: {"status": "refused", "reason": f"could not be made: {first_line(e)}"}
                             for t in args.targets}
            print(f"{name}: could not be made: {first_line(e)}", flush=True)
            store.write_text(json.dumps(results, indent=1))
            continue
        for target in args.targets:
            out = args.work / "builds" / f"{name.replace('/', '_').replace(' ', '_')}-{target}"
            shutil.rmtree(out, ignore_errors=True)
            r = try_target(Path(path), target, out, args.vectors, args.csim_max_weights)
            for key in ("reason", "note"):  # the table names the file, not this run's folders
                if r.get(key):
                    r[key] = r[key].replace(str(path), Path(path).name).replace(str(out), "out")
            results.setdefault(name, {})[target] = r
            print(f"{name} [{target}]: {cell(r)}", flush=True)
            store.write_text(json.dumps(results, indent=1))
    if args.write:
        write_table(results, {k: v[0] for k, v in catalogue.items()}, args.write, args.vectors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
