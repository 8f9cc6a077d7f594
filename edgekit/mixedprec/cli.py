"""``edgekit mixed-precision``: argument parsing and the command (nothing heavy imported until it runs)."""
from __future__ import annotations

import json
import sys

from ..errors import EdgekitError


def cmd_mixed_precision(args) -> int:
    from ..nas.config import parse_latency, parse_size
    from .flow import run
    from .report import summary_text

    if args.epochs < 0 or args.pretrain_epochs < 0:
        raise EdgekitError("--epochs and --pretrain-epochs must be 0 or more")
    if args.train_subset is not None and args.train_subset < 1:
        raise EdgekitError("--train-subset must be at least 1")
    if args.probes < 2:
        raise EdgekitError("--probes must be at least 2 (the trace's spread needs two probes)")
    if args.threads < 1:
        raise EdgekitError(f"--threads {args.threads}: give 1 or more torch threads")
    import torch

    torch.set_num_threads(args.threads)
    def parsed(option, text, parse):
        try:
            return parse(text) if text else None
        except EdgekitError as e:
            raise EdgekitError(f"{option}: {e}") from None

    budgets = {"flash": parsed("--max-flash", args.max_flash, parse_size),
               "ram": parsed("--max-ram", args.max_ram, parse_size),
               "latency_ms": parsed("--max-latency", args.max_latency, parse_latency),
               "instructions": args.max_instructions, "bops": args.max_bops}
    if all(v is None for v in budgets.values()):
        raise EdgekitError("give at least one budget (--max-flash, --max-ram, --max-latency, --max-instructions or "
                           "--max-bops); without one every layer keeps 8 bits")
    if any(v is not None and v <= 0 for v in budgets.values()):
        raise EdgekitError("budgets must be positive")
    act_choices: tuple[int, ...] = ()
    if args.act_bits:
        try:
            act_choices = tuple(sorted({int(v) for v in args.act_bits.split(",") if v.strip()}, reverse=True))
        except ValueError:
            raise EdgekitError(f"--act-bits: expected comma-separated widths such as 8,4, got '{args.act_bits}'") from None
        if not act_choices or set(act_choices) - {8, 4, 2}:
            raise EdgekitError(f"--act-bits takes 8, 4 and/or 2 (e.g. 8,4), got '{args.act_bits}'")
        if act_choices[0] != 8:
            raise EdgekitError("--act-bits must include 8 (the starting checkpoint's width), e.g. 8,4")
    try:
        bit_choices = tuple(sorted({int(v) for v in args.bits.split(",") if v.strip()}, reverse=True))
    except ValueError:
        raise EdgekitError(f"--bits: expected comma-separated widths such as 8,4,2,1, got '{args.bits}'") from None
    if not bit_choices or set(bit_choices) - {8, 4, 2, 1}:
        raise EdgekitError(f"--bits takes 8, 4, 2 and/or 1 (e.g. 8,4,2,1), got '{args.bits}'")
    if bit_choices[0] != 8:
        raise EdgekitError("--bits must include 8 (the starting checkpoint's width), e.g. 8,4,2")
    say = (lambda *a, **k: None) if args.json else (lambda m: print(m, flush=True))
    s = run(args.model, args.dataset, args.board, args.output, budgets, target=args.target, epochs=args.epochs,
            pretrain_epochs=args.pretrain_epochs, probes=args.probes, calibration=args.calibration,
            kernels=args.kernels, seed=args.seed, checkpoint=args.checkpoint,
            train_subset=args.train_subset, say=say, act_choices=act_choices, bit_choices=bit_choices,
            preset=args.preset)
    if args.json:
        print(json.dumps({k: s[k] for k in ("ok", "budgets", "result", "pareto", "seconds", "layers")}, default=str))
    else:
        print(summary_text(s), end="")
        print(f"wrote {args.output}/assignment.json, model.onnx, build/, report.txt, report.json, "
              "accuracy_flash.svg, pareto.json", file=sys.stderr)
    return 0 if s["ok"] else 1


def add_parser(sub) -> None:
    from .flow import DATASETS

    p = sub.add_parser(
        "mixed-precision", help="Hessian-aware per-layer weight widths (8/4/2/1) under flash, RAM and latency "
        "budgets, fine-tuned, built and verified",
        description="Measure each layer's flash and instructions at 8/4/2-bit weights (and 1-bit where a binary "
        "kernel runs the layer) on real builds, estimate "
        "each layer's Hessian trace (Hutchinson) on a QAT 8-bit checkpoint, pick the widths of least HAWQ-V2 "
        "sensitivity within the budgets with an integer linear program (HiGHS), fine-tune with QAT, build for "
        "the board, verify bit-exactly on the emulated core and check the measured flash, RAM and latency. "
        "Exits 1 when the measured build stays over a budget, 2 when no assignment can meet them. "
        "See docs/mixed-precision.md.")
    p.add_argument("--model", required=True, help="zoo architecture, e.g. zoo:har-cnn")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="training and test data")
    p.add_argument("--board", required=True, help="board, e.g. mps2-an386 (see `edgekit targets`)")
    p.add_argument("--target", help="core (default: the board's)")
    p.add_argument("--max-flash", help="flash budget, e.g. 8KB (KB = 1024 bytes): code + weights + runtime")
    p.add_argument("--max-ram", help="RAM budget, e.g. 16KB: arena, static data and reserved stack")
    p.add_argument("--max-latency", help="latency budget at the board's clock, e.g. 5ms (the profiler's estimate)")
    p.add_argument("--max-instructions", type=int, help="budget on executed instructions per inference")
    p.add_argument("--max-bops", type=int, help="budget on bit operations (MACs x weight bits x input bits)")
    p.add_argument("--bits", default="8,4,2,1", help="weight widths to choose from (8,4,2,1); 1 (binary "
                   "weights) only for the layers a binary kernel runs: dense layers under the optimized kernels")
    p.add_argument("--preset", default="int8-pow2", choices=["int8-pow2", "int8-pow2-pc"],
                   help="weight scales of the zoo model: one power of two per tensor (int8-pow2) or per output "
                   "channel (int8-pow2-pc); the cost table is measured with the same granularity")
    p.add_argument("--act-bits", help="activation widths to choose from per ReLU, e.g. 8,4 (default: 8 only); "
                   "chosen by the ILP with the weights' from the activations' Hessian traces")
    p.add_argument("--kernels", choices=["optimized", "reference"], help="kernels to build with (the build's "
                   "default, optimized; the DSP kernels keep weights at int8 in flash, so only reference kernels "
                   "store packed 4/2-bit weights)")
    p.add_argument("--epochs", type=int, default=3, help="QAT fine-tuning epochs with the chosen widths (3)")
    p.add_argument("--pretrain-epochs", type=int, default=6, help="8-bit QAT epochs for the starting checkpoint (6)")
    p.add_argument("--checkpoint", help="start from this 8-bit state dict (checkpoint-w8.pt of an earlier run)")
    p.add_argument("--probes", type=int, default=16, help="Rademacher probes per Hessian trace (16)")
    p.add_argument("--calibration", type=int, default=512, help="training samples for the Hessian traces (512)")
    p.add_argument("--train-subset", type=int, help="train on this many random training samples (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the zoo models' layers are too small "
                   "for torch's intra-op threads to pay, and on a busy machine they stall)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=cmd_mixed_precision)
