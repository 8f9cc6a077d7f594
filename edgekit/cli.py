"""The ``edgekit`` command line: a thin layer over :mod:`edgekit.api`.

User errors (EdgekitError) print one ``error:`` line and exit 2; a failed
verification (or an FPGA build that does not fit its part) exits 1; an internal error exits 3
(EDGEKIT_DEBUG=1 shows its traceback). With ``--json`` every command prints one JSON document on
stdout and nothing else there (progress is off). A closed stdout (``| head``) ends quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .version import __version__
from .errors import EdgekitError
from .progress import set_quiet


def _print_json(doc) -> None:
    print(json.dumps(doc, indent=1))


def _cmd_build(args) -> int:
    from .api import build, build_summary, resolve_target

    target = resolve_target(args.target, args.board)
    if args.allow_overfit and target != "fpga":
        raise EdgekitError("--allow-overfit applies to --target fpga only (a Cortex-M build that does not fit its "
                           "board's memory is refused)")
    res = build(args.model, target, args.board, args.output, kernels=args.kernels, optimize=args.optimize,
                backend=args.backend, io_type=args.io_type, reuse_factor=args.reuse_factor,
                input_bits=args.input_bits, calibration=args.calibration, io_buffers=args.io_buffers)
    overfit = res.manifest.fits is False and not args.allow_overfit
    if args.json:
        _print_json({"build_dir": str(res.out_dir), "fits": res.manifest.fits, "manifest": res.manifest.to_json()})
    else:
        print(build_summary(res))
    if overfit:  # an estimate, so the build stays for report/export; the exit status says it does not fit
        print(f"error: {res.out_dir} does not fit {res.manifest.part} ({res.manifest.board}) by the estimate; "
              f"{_fpga_advice(res)}; or pass --allow-overfit to accept it", file=sys.stderr)
        return 1
    return 0


def _fpga_advice(res) -> str:
    from .backends.hls.build import load_estimates
    from .backends.hls.estimate import overfit_advice

    return overfit_advice(load_estimates(res.out_dir, res.manifest))


def _cmd_verify(args) -> int:
    from .api import verify

    rep = verify(args.build_dir, inputs=args.inputs, count=args.count, seed=args.seed, skip=tuple(args.skip or ()),
                 codes=args.codes, timeout=args.timeout)
    _print_json(rep.to_json()) if args.json else print(rep.table())
    return 0 if rep.ok else 1


def _cmd_report(args) -> int:
    from .api import report

    rep = report(args.build_dir)
    page = str(rep.page) if rep.page else None
    if args.json:
        _print_json(dict(rep.to_json(), page=page))
    else:
        print(rep.text())
        if page:
            print(f"report page: {page}")
    return 0


def _cmd_bench(args) -> int:
    from .bench import SUITES

    return SUITES[args.suite](args)


def _cmd_targets(args) -> int:
    from dataclasses import asdict

    from .backends.hls.boards import get_fpga_board, list_fpga_boards
    from .targets import get_board, get_core, list_boards, list_cores

    cores = [get_core(c) for c in list_cores()]
    boards = [get_board(b) for b in list_boards()]
    fpgas = [get_fpga_board(b) for b in list_fpga_boards()]
    if args.json:
        _print_json({"cores": [asdict(c) for c in cores], "boards": [b.to_json() for b in boards],
                     "fpga_boards": [f.to_json() for f in fpgas]})
        return 0
    width = max(len(x.name) for x in (*cores, *boards, *fpgas))
    for c in cores:
        print(f"core  {c.name:<{width}} {c.description}")
    for bd in boards:
        print(f"board {bd.name:<{width}} {bd.description} (core {bd.core}, flash {bd.flash.length // 1024} KiB, "
              f"RAM {bd.ram.length // 1024} KiB{', emulated' if bd.emulated else ''})")
    for f in fpgas:
        r = f.resources
        print(f"fpga  {f.name:<{width}} {f.description} (--target fpga; part {f.part}: {r['lut']:,} LUT, {r['ff']:,} FF, "
              f"{r['dsp']:,} DSP, {r['bram18']:,} BRAM18)")
    return 0


# --- commands on a build directory, run by the backend that made it (edgekit/backends) ---
def _cmd_flash(args) -> int:
    from .api import flash

    # the firmware's lines go to stdout as they come, or to stderr when stdout carries the JSON
    stream = sys.stderr if args.json else sys.stdout
    res = flash(args.build_dir, board=args.board, probe=args.probe, uid=args.uid, inputs=args.inputs,
                count=args.count, seed=args.seed, timeout=args.timeout,
                on_line=lambda line: print(f"  | {line}", file=stream, flush=True))
    if args.json:
        from dataclasses import asdict

        _print_json({**asdict(res), "ok": res.ok})
    else:
        print(res.summary())
    return 0 if res.ok else 1


def _cmd_profile(args) -> int:
    from .api import profile

    rep = profile(args.build_dir, board=args.board, inputs=args.inputs, count=args.count, seed=args.seed,
                  vector=args.vector)
    if args.json:
        _print_json(rep.to_json())
    else:
        print(rep.table())
        print("wrote " + ", ".join(str(p) for p in rep.written))
    return 0


def _cmd_export(args) -> int:
    from .api import export

    dest, what = export(args.build_dir, args.output)
    _print_json({"build_dir": str(args.build_dir), "output": str(dest), "summary": what}) if args.json else print(what)
    return 0
# --- end commands on a build directory ---


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekit", description="From quantization-aware training to verified "
                                "firmware: build QONNX or int8 TFLite models for Cortex-M (or QONNX models for "
                                "FPGAs, through hls4ml) and prove every stage bit-exact. Every command takes --json.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="compile a QONNX or int8 TFLite model into C sources, a host runner and "
                       "firmware (or an hls4ml project for an FPGA)",
                       description="Load a QONNX model (or an int8 .tflite model), lower it to edgekit's integer IR, "
                       "plan memory, generate C and cross-compile firmware for a board; with an FPGA board, write "
                       "an hls4ml project instead. The output directory is written only if every step succeeds. "
                       "Exits 1 when an FPGA build's estimate does not fit its part (the build is kept; "
                       "--allow-overfit accepts it).")
    b.add_argument("model", help="QONNX file (.onnx, e.g. exported with brevitas.export.export_qonnx) or int8 "
                   "TFLite file (.tflite; Cortex-M targets only)")
    b.add_argument("--target", help="core, e.g. cortex-m4, or fpga (an hls4ml project: docs/fpga.md); default: the "
                   "one the board fixes (see `edgekit targets`)")
    b.add_argument("--board", help="board, e.g. mps2-an386 or pynq-z2 (see `edgekit targets`)")
    b.add_argument("-o", "--output", required=True, help="build directory to create")
    b.add_argument("--kernels", choices=["optimized", "reference"], help="optimized (default): DSP-extension "
                   "kernels where the core has them and a layer fits (docs/kernels.md); reference: the portable "
                   "reference kernels everywhere. Both compute the same integers")
    b.add_argument("--optimize", choices=["size", "balanced", "speed"], help="with optimized kernels: size keeps "
                   "conv and dense weights at int8 in flash; balanced (default) widens the layers that gain most to "
                   "int16 within the default flash goal (1.05 x the int8 parameters + 24 KiB, docs/kernels.md); "
                   "speed widens them where the board's flash allows (fewer instructions, about 2x their flash)")
    b.add_argument("--input-bits", type=int, metavar="N", help="for a QONNX model whose first layer reads the float "
                   "input (QKeras-style): the input quantizer's bits; with --calibration")
    b.add_argument("--calibration", metavar="X.npy", help="with --input-bits: float samples in the model's input "
                   "layout; the input scale is the smallest power of two that covers their largest magnitude "
                   "(signed when any is negative)")
    b.add_argument("--io-buffers", choices=["arena", "caller"], help="where the model's input and output live: "
                   "arena (default): inside the planned arena, which reuses their bytes (ek_model_input(), "
                   "ek_model_output(), ek_model_run()); caller: the caller's own buffers, ek_model_run(in, out), "
                   "which cost their bytes on top of the arena (docs/c-api.md)")
    # --- FPGA targets (issue 7) ---
    b.add_argument("--backend", choices=["vitis", "vivado"], help="with --target fpga: HLS tool the hls4ml project "
                   "is written for (vitis)")
    b.add_argument("--io-type", choices=["io_parallel", "io_stream"], help="with --target fpga: hls4ml I/O type "
                   "(io_parallel)")
    b.add_argument("--reuse-factor", type=int, metavar="N", help="with --target fpga: multiplications per "
                   "multiplier (1 = fully parallel); a build that does not fit names the smallest that fits")
    b.add_argument("--allow-overfit", action="store_true", help="with --target fpga: exit 0 even when the "
                   "estimated resources exceed the part's")
    # --- end FPGA ---
    b.add_argument("--json", action="store_true", help="print the build's manifest as JSON")
    b.set_defaults(func=_cmd_build)

    v = sub.add_parser("verify", help="prove every stage of a build computes the same integers",
                       description="Run test vectors through edgekit's integer simulator (the reference), the "
                       "reference stage (qonnx for a QONNX build, TFLite Micro's interpreter for a .tflite build) and "
                       "the build's own stages (Cortex-M: the host build and the firmware on the emulated board, a real "
                       "board's build relinked for the emulated board with the same core; FPGA: hls4ml's C-simulation) "
                       "and compare outputs element by element. Exits 1 if a stage that must be exact differs.")
    v.add_argument("build_dir", help="directory written by `edgekit build`")
    v.add_argument("--inputs", help="float inputs (.npy) in the model's input layout, shape (N, ...)")
    v.add_argument("--codes", help="raw integer input codes (.npy, e.g. int8 for TFLite models), used as they are")
    v.add_argument("--count", type=int, default=256, help="number of generated vectors without --inputs (256)")
    v.add_argument("--seed", type=int, default=0, help="seed for generated vectors (0)")
    v.add_argument("--skip", action="append", choices=["qonnx", "host", "qemu", "csim"], help="skip a stage "
                   "(repeatable; qonnx is the reference stage: qonnx, or TFLite Micro for .tflite builds; host and "
                   "qemu are Cortex-M stages, csim the FPGA build's hls4ml C-simulation)")
    v.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit of each stage (default: scales "
                   "with the model's work and the number of vectors, at least 120 s)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_cmd_verify)

    r = sub.add_parser("report", help="print the per-layer report of a build (Cortex-M: shapes, MACs, memory "
                       "plan; FPGA: precisions, resource and latency estimates)",
                       description="Per-layer report of a build directory. Cortex-M: op, shapes, MACs, weight "
                       "bytes, activation bytes, arena offsets and live arena bytes (the build also writes it as "
                       "report.txt, report.json and report.html, with a memory-over-time plot). FPGA: the "
                       "fixed-point types and the per-layer resource and latency estimates.")
    r.add_argument("build_dir", help="directory written by `edgekit build`")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=_cmd_report)

    from .bench import SUITES

    bn = sub.add_parser("bench", help="run a benchmark suite (not a test): " + ", ".join(sorted(SUITES)),
                        description="Benchmarks against recorded peer data in ../shared/peers. zoo: build and verify "
                        "the model zoo on the emulated board and compare peak RAM with TFLM's arena. mlperf-tiny: the three MLPerf Tiny "
                        "int8 models (and visual wake words) with reference and optimized kernels: bit-exactness against the TFLite "
                        "Micro goldens, instructions per inference and per MAC by layer kind, peak RAM, code and whole-firmware "
                        "flash against TFLM + CMSIS-NN, model constants against the int8 parameter bytes. sim: the integer "
                        "simulator's time at --batch against qonnx's execution (TFLite Micro's for .tflite), and where it goes. "
                        "binary: 1-bit (XNOR-popcount) dense and conv layers against int8 ones, instructions per MAC.")
    bn.add_argument("suite", choices=sorted(SUITES))
    bn.add_argument("--models", help="comma-separated subset (zoo: ds-cnn,resnet8,fc-autoencoder,mobilenetv1-0.25,har-cnn; "
                    "mlperf-tiny: kws,resnet,ad,vww; sim: those, the QONNX zoo files, or .onnx/.tflite paths)")
    bn.add_argument("--count", type=int, default=16, help="vectors verified per model (16)")
    bn.add_argument("--batch", type=int, default=256, help="sim: samples per batch (256); see docs/simulator.md")
    bn.add_argument("--board", help="mlperf-tiny: the emulated board to measure on (mps2-an386, the Cortex-M4 of the "
                    "recorded peer figures; mps2-an500: Cortex-M7, also recorded; mps3-an547: Cortex-M55 with Helium)")
    bn.add_argument("--vww-model", help="mlperf-tiny: the visual wake words .tflite to measure (default: "
                    "vww_96_int8.tflite in the peers folder, else a stand-in made with TensorFlow)")
    bn.add_argument("--optimize", choices=["size", "balanced", "speed"], help="mlperf-tiny: edgekit build --optimize "
                    "for the optimized kernels (balanced)")
    bn.add_argument("--io-buffers", choices=["arena", "caller"], help="mlperf-tiny: edgekit build --io-buffers "
                    "(arena); peak RAM counts the caller's input and output buffers with caller (docs/c-api.md)")
    bn.add_argument("--json", action="store_true", help="print JSON")
    bn.set_defaults(func=_cmd_bench)

    t = sub.add_parser("targets", help="list the cores, boards and FPGA boards edgekit knows",
                       description="List cores (--target), microcontroller boards and FPGA boards (--board; an FPGA "
                       "board builds with --target fpga) from targets/.")
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(func=_cmd_targets)

    # --- commands on a build directory ---
    f = sub.add_parser("flash", help="run a build's firmware on its board (QEMU, or a real board via a probe)",
                       description="On an emulated board, run the firmware in QEMU; on a real board, program it "
                       "through pyocd (or openocd), reset it and serve its semihosting. The firmware runs the test "
                       "vectors; its outputs are compared with the simulator. Exits 1 if they differ.")
    f.add_argument("build_dir", help="directory written by `edgekit build`")
    f.add_argument("--board", help="the board to run on; must be the build's board (default: the build's board)")
    f.add_argument("--probe", choices=["pyocd", "openocd"], default="pyocd", help="debug-probe tool (pyocd)")
    f.add_argument("--uid", help="unique ID / serial number of the probe to use")
    f.add_argument("--inputs", help="float inputs (.npy) in the model's input layout")
    f.add_argument("--count", type=int, default=16, help="number of generated vectors without --inputs (16)")
    f.add_argument("--seed", type=int, default=0, help="seed for generated vectors (0)")
    f.add_argument("--timeout", type=float, help="seconds the run may take (default: scaled with the model's "
                   "instructions per inference and the number of vectors, at least 120)")
    f.add_argument("--json", action="store_true", help="print the result as JSON (the firmware's lines go to "
                   "stderr)")
    f.set_defaults(func=_cmd_flash)

    pr = sub.add_parser("profile", help="exact instruction counts per layer on an emulated board, cycle estimate",
                        description="Count the instructions of one inference and of each layer exactly on QEMU "
                        "(edgekit's TCG plugin), estimate cycles and ms from instruction classes, break flash and "
                        "RAM down; writes profile.json and profile.html into the build directory.")
    pr.add_argument("build_dir", help="directory written by `edgekit build`")
    pr.add_argument("--board", help="emulated board to count on (default: the build's board, or the QEMU board "
                    "with the same core)")
    pr.add_argument("--inputs", help="float inputs (.npy); default: random input codes")
    pr.add_argument("--count", type=int, default=8, help="number of random input vectors (8)")
    pr.add_argument("--seed", type=int, default=0, help="seed for the random input vectors (0)")
    pr.add_argument("--vector", type=int, default=0, help="which vector's inference the table shows (0)")
    pr.add_argument("--json", action="store_true", help="print the profile as JSON")
    pr.set_defaults(func=_cmd_profile)

    e = sub.add_parser("export", help="write a standalone project from a build (C library, or HLS project)",
                       description="Cortex-M: copy the generated library and the harness into a folder with a "
                       "Makefile, a CMakeLists.txt and a CMake toolchain file that build it with arm-none-eabi-gcc, "
                       "without Python or edgekit. FPGA: the hls4ml project, ready for Vitis/Vivado HLS.")
    e.add_argument("build_dir", help="directory written by `edgekit build`")
    e.add_argument("-o", "--output", required=True, help="project folder to write")
    e.add_argument("--json", action="store_true", help="print where the project went as JSON")
    e.set_defaults(func=_cmd_export)
    # --- end commands on a build directory ---
    # Commands whose code is a package of its own add their parsers themselves.
    from .fuzz import campaign as fuzz_cli
    from .mixedprec import cli as mixed_precision_cli
    from .nas import cli as nas_cli
    from .ptq import cli as quantize_cli
    from .validation import cli as validate_cli

    for add_parsers in (quantize_cli.add_parser, validate_cli.add_parser, nas_cli.add_parsers,
                        mixed_precision_cli.add_parser, fuzz_cli.add_parser):
        add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    set_quiet(getattr(args, "json", False))
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader of stdout went away (`edgekit ... | head`): Python's documented remedy, so that
        # flushing at exit does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
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
