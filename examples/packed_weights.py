"""Flash and instructions of the packed 4-/2-bit DSP kernels against the int8-weight ones (docs/kernels.md,
"Packed 4- and 2-bit weights").

Builds each model twice for a board (default mps2-an386, a Cortex-M4; mps3-an547 for the Helium kernels of
the M55) with ``--optimize size``: as edgekit picks (layers with 4- or 2-bit weights get ``conv2d_gemm_packed``
/ ``dense_packed``, on the M55 ``mve_gemm_packed`` / ``mve_dense_packed``), and with the packed variants
withdrawn (the same layers get ``conv2d_gemm_int8`` / ``dense_int8`` or ``mve_gemm`` / ``mve_dense``: the
weights stored as int8 bytes). Each build is verified
(host and QEMU against the simulator) and profiled on the emulated core.

Models: the zoo's DS-CNN, ResNet-8 and FC autoencoder with the ``w4a8-pow2`` and ``w2a8-pow2`` presets
(seeded random weights, calibrated activations), and the QONNX zoo files with sub-byte weights in
../shared/peers/qonnx_zoo (when present).

    PYTHONPATH=. .venv/bin/python examples/packed_weights.py [--models ds-cnn,resnet8] [--json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

PACKED = ("conv2d_gemm_packed", "dense_packed", "mve_gemm_packed", "mve_dense_packed")
ZOO_MODELS = ("ds-cnn", "resnet8", "fc-autoencoder")
PRESETS = ("w4a8-pow2", "w2a8-pow2")
QONNX_FILES = ("TFC_2W2A.onnx", "kwsmlp_w3a3.onnx", "unsw_nb15-mlp-w2a2.onnx")


def _measure(onnx_path: Path, out: Path, board: str, packed: bool) -> dict:
    from edgekit.api import build, verify
    from edgekit.backends.cortexm.kernels import registry as kernel_registry
    from edgekit.backends.cortexm.profile import profile

    reg = kernel_registry.registry()
    saved = {name: reg.get(name).modes for name in PACKED}
    try:
        if not packed:  # withdraw the packed variants: the int8-weight ones take their layers
            for name in PACKED:
                reg.get(name).modes = frozenset()
        res = build(onnx_path, None, board, out, optimize="size")
    finally:
        for name, modes in saved.items():
            reg.get(name).modes = modes
    rep = verify(out, count=8, stages=("host", "qemu"))
    prof = profile(out, count=1, write=False).to_json()
    m = res.manifest
    variants = sorted({v for v in m.kernel_variants.values() if "gemm" in v or "dense" in v})
    return {"instructions": prof["total"]["instructions"], "flash_bytes": m.memory["flash_bytes"],
            "weights_flash_bytes": m.memory_breakdown["flash"]["weights"], "macs": m.macs,
            "bit_exact": rep.ok and all(s.mismatches == 0 for s in rep.stages), "variants": variants}


def _models(work: Path, names: list[str]) -> list[tuple[str, Path]]:
    import torch

    from edgekit.bench import peers_dir
    from edgekit.qat import export_qonnx
    from edgekit.qat.zoo import ZOO, calibrate

    out = []
    for name in names:
        if name in ZOO:
            for preset in PRESETS:
                torch.manual_seed(0)
                model = calibrate(ZOO[name](preset=preset))
                path = export_qonnx(model, torch.zeros(1, *model.input_shape), work / f"{name}-{preset}.onnx")
                out.append((f"{name} {preset}", path))
        else:
            path = (peers_dir() or Path("/nonexistent")) / "qonnx_zoo" / name
            if path.is_file():
                out.append((name, path))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated zoo names and QONNX zoo file names")
    ap.add_argument("--board", default="mps2-an386")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else [*ZOO_MODELS, *QONNX_FILES]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-packed-") as tmp:
        work = Path(tmp)
        for label, path in _models(work, names):
            stem = label.replace(" ", "-")
            p = _measure(path, work / f"{stem}-packed", args.board, True)
            i = _measure(path, work / f"{stem}-int8", args.board, False)
            rows.append({"model": label, "packed": p, "int8": i})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<28}{'MACs':>10}{'weights int8':>14}{'packed':>9}{'ratio':>7}{'flash int8':>12}{'packed':>9}"
          f"{'instr int8':>12}{'packed':>11}{'ratio':>7}  exact")
    for r in rows:
        p, i = r["packed"], r["int8"]
        print(f"{r['model']:<28}{p['macs']:>10,}{i['weights_flash_bytes']:>14,}{p['weights_flash_bytes']:>9,}"
              f"{p['weights_flash_bytes'] / i['weights_flash_bytes']:>7.3f}{i['flash_bytes']:>12,}{p['flash_bytes']:>9,}"
              f"{i['instructions']:>12,}{p['instructions']:>11,}{p['instructions'] / i['instructions']:>7.3f}  "
              f"{'yes' if p['bit_exact'] and i['bit_exact'] else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
