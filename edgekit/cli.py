"""The ``edgekit`` command line: a thin layer over :mod:`edgekit.api`.

User errors (EdgekitError) print one ``error:`` line and exit 2; a failed
verification exits 1; an internal error exits 3 (EDGEKIT_DEBUG=1 shows its traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import EdgekitError


def _cmd_build(args) -> int:
    from .api import build

    # --- FPGA targets (issue 7): an hls4ml project, edgekit/backends/hls ---
    if args.target == "fpga" or args.backend or args.io_type or args.reuse_factor is not None:
        from .backends.hls.build import summary

        res = build(args.model, args.target, args.board, args.output, backend=args.backend, io_type=args.io_type,
                    reuse_factor=args.reuse_factor)
        print(summary(res))
        return 0
    # --- end FPGA ---
    res = build(args.model, args.target, args.board, args.output)
    m = res.manifest
    mem = m["memory"]
    print(f"built {res.out_dir} for {m['target']} on {m['board']}: {len(m['layers'])} layers, {m['macs']} MACs, "
          f"flash {mem['flash_bytes']} B, RAM {mem['ram_bytes']} B (arena {m['arena_bytes']} B, "
          f"stack {mem['stack_bytes']} B) in {m['build_seconds']} s")
    return 0


def _cmd_verify(args) -> int:
    from .api import verify

    stages = tuple(s for s in ("qonnx", "host", "qemu") if s not in (args.skip or []))
    rep = verify(args.build_dir, inputs=args.inputs, count=args.count, seed=args.seed, stages=stages)
    print(json.dumps(rep.to_json(), indent=1) if args.json else rep.table())
    return 0 if rep.ok else 1


def _cmd_targets(args) -> int:
    from .targets import get_board, get_core, list_boards, list_cores

    for c in list_cores():
        print(f"core  {c:<14} {get_core(c).description}")
    for b in list_boards():
        bd = get_board(b)
        print(f"board {b:<14} {bd.description} (flash {bd.flash.length // 1024} KiB, RAM {bd.ram.length // 1024} KiB)")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekit", description="From quantization-aware training to verified "
                                "firmware: build QONNX models for Cortex-M and prove every stage bit-exact.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="compile a QONNX model into C sources, a host runner and firmware",
                       description="Load and clean a QONNX model, lower it to edgekit's integer IR, plan memory, "
                       "generate C and cross-compile firmware for a board. The output directory is written only "
                       "if every step succeeds.")
    b.add_argument("model", help="QONNX file (e.g. exported with brevitas.export.export_qonnx)")
    b.add_argument("--target", required=True, help="core, e.g. cortex-m4 (see `edgekit targets`)")
    b.add_argument("--board", help="board, e.g. mps2-an386 (see `edgekit targets`)")
    b.add_argument("-o", "--output", required=True, help="build directory to create")
    # --- FPGA targets (issue 7) ---
    b.add_argument("--backend", choices=["vitis", "vivado"], help="with --target fpga: HLS tool the hls4ml project "
                   "is written for (vitis)")
    b.add_argument("--io-type", choices=["io_parallel", "io_stream"], help="with --target fpga: hls4ml I/O type "
                   "(io_parallel)")
    b.add_argument("--reuse-factor", type=int, metavar="N", help="with --target fpga: multiplications per "
                   "multiplier (1 = fully parallel)")
    # --- end FPGA ---
    b.set_defaults(func=_cmd_build)

    v = sub.add_parser("verify", help="prove qonnx, simulator, host C and emulated firmware agree",
                       description="Run test vectors through qonnx, the integer simulator, the host build and the "
                       "firmware on the emulated board and compare outputs element by element. Exits 1 if a stage "
                       "that must be exact differs.")
    v.add_argument("build_dir", help="directory written by `edgekit build`")
    v.add_argument("--inputs", help="float inputs (.npy) in the model's input layout, shape (N, ...)")
    v.add_argument("--count", type=int, default=256, help="number of generated vectors without --inputs (256)")
    v.add_argument("--seed", type=int, default=0, help="seed for generated vectors (0)")
    v.add_argument("--skip", action="append", choices=["qonnx", "host", "qemu"], help="skip a stage (repeatable)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_cmd_verify)

    t = sub.add_parser("targets", help="list the cores and boards edgekit knows",
                       description="List cores (--target) and boards (--board) from targets/.")
    t.set_defaults(func=_cmd_targets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in edgekit, not in the user's input
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        print(f"error: internal error in edgekit ({type(e).__name__}: {e}); this is a bug: please report it "
              "with the traceback from EDGEKIT_DEBUG=1", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
