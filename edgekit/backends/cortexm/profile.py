"""``edgekit profile``: exact instruction counts per inference and per layer on an emulated
board, a per-core cycle estimate, and where flash and RAM go.

How it counts (docs/targets-and-profiling.md has the full definition):

* The firmware runs on QEMU with edgekit's TCG plugin (``qemu_plugin/ek_insn.c``), which
  counts every executed guest instruction; QEMU's translation does not depend on timing,
  so the counts are exact and repeatable.
* **One inference** is one call of ``ek_model_run``: from its first instruction up to and
  including the instruction that returns to the caller (``main`` in the harness). The
  harness's own instructions (semihosting I/O, the loop) are not counted.
* **Per layer**: every layer is an out-of-line function ``ek_layer<N>_<name>`` (GCC may
  add ``.constprop.0`` and the like). An instruction counts for the layer whose code ran
  last, so helpers a layer calls (libgcc, memcpy) count for that layer; instructions of
  ``ek_model_run`` itself form the **glue** row. The rows add up exactly to the inference.
* **Cycles** are an *estimate*: each executed instruction is classified from the
  disassembly (ALU, multiply, MAC, long multiply, divide, SIMD, load, store, load/store
  multiple, branch, call, FPU, MVE, other) and costed with the core's ``[timing]`` table;
  a branch that was taken (the next instruction was not the following address) adds the
  core's refill penalty. Wait states, caches, stalls between dependent instructions and
  dual issue beyond the table's averages are not modelled. ms = cycles / the board's clock.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BuildDirError, TargetError, ToolchainError, VerificationError
from ...targets import Board, Core, board_from_json, emulated_boards, get_board, get_core
from . import toolchain as tc
from .memory import breakdown

PROFILE_JSON = "profile.json"
PROFILE_HTML = "profile.html"
GLUE = "ek_model_run"
LAYER_RE = re.compile(r"^ek_layer(\d+)_")
DEFINITION = ("one inference = one call of ek_model_run, from its first instruction up to and including the "
              "instruction that returns to the caller; each instruction counts for the layer function "
              "(ek_layer<N>_*) that ran last, ek_model_run's own instructions are the glue row")


# ---------------------------------------------------------------------------------------
# Running the firmware under the plugin
# ---------------------------------------------------------------------------------------
@dataclass
class Zone:
    name: str
    lo: int
    hi: int


@dataclass
class Counts:
    """What the plugin reported."""
    all_instructions: int
    zones: list[Zone]
    windows: list[list[int]]            # per window (inference): per zone, + unattributed last
    detail: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (zone, pc) -> (n, taken)
    outside: dict[int, int] = field(default_factory=dict)
    open_window: bool = False
    log: str = ""


def parse_plugin_output(text: str, zones: list[Zone]) -> Counts:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("ek_insn 1"):
        raise ToolchainError("the instruction-count plugin wrote no usable output")
    c = Counts(0, zones, [])
    for line in lines[1:]:
        f = line.split()
        if f[0] == "all":
            c.all_instructions = int(f[1])
        elif f[0] == "windows":
            c.open_window = f[3] == "1"
        elif f[0] == "w":
            c.windows.append([int(x) for x in f[2:]])
        elif f[0] == "p":
            c.detail[(int(f[1]), int(f[2], 16))] = (int(f[3]), int(f[4]))
        elif f[0] == "o":
            c.outside[int(f[1])] = int(f[2])
    if c.open_window:  # the last window never returned: not a whole inference
        c.windows.pop()
    return c


def run_counted(elf: Path, machine: str, workdir: Path, zones: list[Zone], code: tuple[int, int],
                start: int | None = None, stop: tuple[int, int] | None = None, detail: int = 0,
                timeout: float = 300) -> Counts:
    """Run ``elf`` on QEMU ``machine`` in ``workdir`` (inputs.bin there) under the plugin."""
    from .qemu_plugin import find_plugin

    plugin = find_plugin()
    out = workdir / "ek_insn.txt"
    args = [f"file={plugin}", f"out={out}", f"lo=0x{code[0]:x}", f"hi=0x{code[1]:x}", f"detail={detail}"]
    if start is not None:
        args += [f"start=0x{start:x}", f"stop_lo=0x{stop[0]:x}", f"stop_hi=0x{stop[1]:x}"]
    args += [f"zone=0x{z.lo:x}:0x{z.hi:x}" for z in zones]
    if any("," in a for a in args):
        raise ToolchainError(f"a path contains a comma, which QEMU's -plugin option cannot take: {plugin} / {out}")
    proc = tc.run_qemu(elf, machine, workdir, timeout=timeout, extra=["-plugin", ",".join(args)])
    if not out.is_file():
        raise ToolchainError(f"QEMU ran but the instruction-count plugin wrote nothing ({plugin}); "
                             f"QEMU said: {(proc.stdout + proc.stderr).strip()[-500:]}")
    counts = parse_plugin_output(out.read_text(), zones)
    counts.log = proc.stdout + proc.stderr
    return counts


# ---------------------------------------------------------------------------------------
# Instruction classes
# ---------------------------------------------------------------------------------------
_CONDS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al")
_BRANCH = {"b", "bx", "cbz", "cbnz", "tbb", "tbh", "le", "letp", "wls", "wlstp", "dls", "dlstp", "lctp",
           "bf", "bfx", "bfcsel"} | {"b" + c for c in _CONDS}
_CALL = {"bl", "blx", "bfl", "bflx"}
_MUL = {"mul", "smmul", "smmulr"} | {f"smul{a}{b}" for a in "bt" for b in "bt"} | {"smulwb", "smulwt"}
_MAC = {"mla", "mls", "smmla", "smmlar", "smmls", "smmlsr"} | {f"smla{a}{b}" for a in "bt" for b in "bt"} \
    | {"smlawb", "smlawt"}
_MUL_LONG = {"umull", "smull", "umlal", "smlal", "umaal", "smlald", "smlaldx", "smlsld", "smlsldx"} \
    | {f"smlal{a}{b}" for a in "bt" for b in "bt"}
_DIV = {"sdiv", "udiv"}
_SIMD = {"qadd", "qsub", "qdadd", "qdsub", "sel", "ssat", "usat", "ssat16", "usat16", "sxtb16", "sxtab16",
         "uxtb16", "uxtab16", "pkhbt", "pkhtb", "smlad", "smladx", "smlsd", "smlsdx", "smuad", "smuadx", "smusd",
         "smusdx", "usad8", "usada8"} | {f"{p}{op}{w}" for p in ("s", "u", "q", "sh", "uh", "uq")
                                          for op in ("add", "sub", "asx", "sax") for w in ("8", "16", "")
                                          if (p, op, w) != ("s", "add", "") and (p, op, w) != ("s", "sub", "")}
_LDM = {"ldm", "ldmia", "ldmdb", "ldmfd", "ldmea", "stm", "stmia", "stmdb", "stmfd", "stmea", "push", "pop"}
_ALU = {"add", "adds", "addw", "adc", "sub", "subw", "sbc", "rsb", "rsc", "mov", "movw", "movt", "mvn", "cmp", "cmn",
        "tst", "teq", "and", "orr", "orn", "eor", "bic", "lsl", "lsr", "asr", "ror", "rrx", "neg", "sxtb", "sxth",
        "uxtb", "uxth", "sxtab", "sxtah", "uxtab", "uxtah", "ubfx", "sbfx", "bfi", "bfc", "clz", "rbit", "rev",
        "rev16", "revsh", "adr", "nop", "lsll", "lsrl", "asrl", "sqshl", "sqshll", "sqrshr", "sqrshrl", "srshr",
        "srshrl", "uqshl", "uqshll", "uqrshl", "uqrshll", "urshr", "urshrl", "csel", "csinc", "csinv", "csneg",
        "cset", "csetm", "cinc", "cinv", "cneg", "yield"}
_OTHER = {"bkpt", "svc", "mrs", "msr", "cpsie", "cpsid", "dsb", "dmb", "isb", "wfi", "wfe", "sev", "udf", "sg",
          "tt", "ttt", "tta", "ttat", "clrex", "pld", "pli", "vmrs", "vmsr"}


def _known(m: str) -> str | None:
    if m in _CALL:
        return "call"
    if m in _BRANCH:
        return "branch"
    if re.fullmatch(r"it[te]{0,3}", m):
        return "it"
    if m in _LDM:
        return "ldm"
    if m in _MUL:
        return "mul"
    if m in _MAC:
        return "mac"
    if m in _MUL_LONG:
        return "mul_long"
    if m in _DIV:
        return "div"
    if m in _SIMD:
        return "simd"
    if m in _OTHER:
        return "other"
    if re.fullmatch(r"ldr(b|h|sb|sh|d|ex|exb|exh|t|bt|ht|sbt|sht)?|lda(b|h|ex|exb|exh)?", m):
        return "load"
    if re.fullmatch(r"str(b|h|d|ex|exb|exh|t|bt|ht)?|stl(b|h|ex|exb|exh)?", m):
        return "store"
    if m in _ALU:
        return "alu"
    return None


def classify(mnemonic: str, operands: str, core: Core) -> tuple[str, int]:
    """(class, registers moved) of one instruction as objdump prints it."""
    m = mnemonic.lower().split(".")[0]
    if m.startswith("v"):
        if m in ("vpush", "vpop", "vldm", "vstm", "vldmia", "vstmia", "vldmdb", "vstmdb"):
            return "fpu", 1
        return ("mve" if core.has_mve and re.search(r"\bq\d", operands) else "fpu"), 0
    cls = _known(m)
    if cls is None:
        for cand in _strip_suffixes(m):
            cls = _known(cand)
            if cls is not None:
                break
    if cls is None:
        return "other", 0
    if cls == "ldm":
        regs = _reglist(operands)
        return "ldm", regs
    return cls, 0


def _strip_suffixes(m: str):
    for c in _CONDS:
        if m.endswith(c) and len(m) > 2:
            yield m[:-2]
            if m[:-2].endswith("s"):
                yield m[:-3]
    if m.endswith("s"):
        yield m[:-1]


def _reglist(operands: str) -> int:
    m = re.search(r"\{([^}]*)\}", operands)
    if not m:
        return 1
    n = 0
    for part in m.group(1).split(","):
        part = part.strip()
        r = re.fullmatch(r"[rd](\d+)\s*-\s*[rd](\d+)", part)
        n += int(r.group(2)) - int(r.group(1)) + 1 if r else 1
    return n


def disassembly(elf: Path, lo: int, hi: int, arch: str | None = None) -> dict[int, tuple[str, str]]:
    """address -> (mnemonic, operands) for the code in [lo, hi)."""
    insns = {}
    for line in tc.disassemble(elf, lo, hi, arch).splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m and not m.group(2).startswith("."):
            insns[int(m.group(1), 16)] = (m.group(2), m.group(3).split("@")[0].strip())
    return insns


def instruction_cost(cls: str, regs: int, count: int, taken: int, timing: dict) -> float:
    t = lambda k: timing.get(k, 1.0)  # noqa: E731
    if cls == "ldm":
        base = count * (t("ldm_base") + regs * t("ldm_per_reg"))
    else:
        base = count * t(cls)
    if cls != "call":  # a call's cost includes its refill
        base += taken * t("branch_taken_extra")
    return base


# ---------------------------------------------------------------------------------------
# The profile of a build directory
# ---------------------------------------------------------------------------------------
def _load_manifest(build_dir: Path) -> dict:
    from ...build import load_manifest

    return load_manifest(build_dir)


def build_board(manifest: dict) -> Board:
    """The board a build was made for: the description stored in its manifest (exactly what
    the build used, also for a board given as a TOML file), else the shipped board by name."""
    desc = manifest.get("board_description")
    return board_from_json(desc) if desc else get_board(manifest["board"])


#: Armv6-M code runs unchanged on an Armv7-M core: the fallback when the micro:bit's 16 KiB
#: of RAM is too small for a Cortex-M0+ build (the executed instructions are the same).
ARMV6M_FALLBACK = "mps2-an385"


def profile_boards_for(manifest: dict, board: str | None) -> list[Board]:
    """Emulated boards to count on, best first: ``board`` (same core as the build), else the
    build's own board when QEMU emulates it, else the emulated boards with the build's core
    (for a Cortex-M0+ also mps2-an385, whose Cortex-M3 executes Armv6-M code unchanged)."""
    core = manifest["target"]
    if board is not None:
        b = get_board(board)
        if not b.emulated:
            raise TargetError(f"board '{b.name}' is not emulated: instruction counts need a QEMU board with a "
                              f"{core}: {', '.join(emulated_boards(core)) or 'none'}")
        if b.core != core and not (core == "cortex-m0plus" and b.name == ARMV6M_FALLBACK):
            raise TargetError(f"the build is for a {core}, but board '{b.name}' has a {b.core}; rebuild with "
                              f"--target {b.core} --board {b.name}, or profile on "
                              f"{', '.join(emulated_boards(core)) or 'no emulated board'}")
        return [b]
    own = build_board(manifest)
    if own.emulated:
        return [own]
    names = emulated_boards(core) + ([ARMV6M_FALLBACK] if core == "cortex-m0plus" else [])
    if not names:
        raise TargetError(f"no emulated board carries a {core}; instruction counts need one")
    return [get_board(n) for n in names]


def firmware_for(build_dir: Path, manifest: dict, board: Board, workdir: Path) -> Path:
    """The build's firmware if it was linked for ``board``, else the same sources, compiled with
    the same flags, linked for it (TargetError if they do not fit its memory)."""
    if manifest["board"] == board.name:
        return build_dir / manifest["firmware"]
    core = get_core(manifest["target"])
    tmp = workdir / f"relink-{board.name}"
    shutil.copytree(build_dir / "src", tmp / "src")
    shutil.copytree(build_dir / "firmware", tmp / "firmware")
    script = tc.render_linker_script(core, board, tmp / "firmware" / "link.ld")
    return tc.compile_firmware(tmp, core, board, script)


def _zones(syms: list[dict], layers: list[dict]) -> tuple[list[Zone], dict[int, int]]:
    """Zones for the plugin: ek_model_run (index 0) then every layer function; layer index -> zone."""
    funcs = [s for s in syms if s["type"] in "tT" and s["size"] > 0]
    glue = [s for s in funcs if s["name"] == GLUE]
    if not glue:
        raise BuildDirError(f"the firmware has no {GLUE} symbol")
    zones = [Zone(GLUE, glue[0]["addr"], glue[0]["addr"] + glue[0]["size"])]
    layer_zone = {}
    for s in funcs:
        m = LAYER_RE.match(s["name"])
        if m:
            idx = int(m.group(1))
            if idx >= len(layers):
                raise BuildDirError(f"firmware symbol {s['name']} names layer {idx}, but the build has "
                                    f"{len(layers)} layers")
            layer_zone.setdefault(idx, [])
            layer_zone[idx].append(len(zones))
            zones.append(Zone(s["name"], s["addr"], s["addr"] + s["size"]))
    return zones, layer_zone


def profile_inputs(graph, count: int, seed: int) -> np.ndarray:
    """Uniformly random input codes over the input quantizer's range (seeded)."""
    iq = graph.input_quant
    n = graph.tensors[graph.inputs[0]].size
    return np.random.default_rng(seed).integers(iq.qmin, iq.qmax + 1, size=(count, n))


@dataclass
class ProfileReport:
    data: dict

    def to_json(self) -> dict:
        return self.data

    def table(self) -> str:
        d = self.data
        lines = [f"edgekit profile {d['build_dir']}: {d['target']} on {d['board']}; instructions counted on QEMU "
                 f"{d['counted_on']}, cycles estimated for {d['target']} at {d['clock_hz'] / 1e6:g} MHz "
                 f"({d['clock_source']})",
                 f"{'layer':<28}{'op':<12}{'MACs':>10}{'instructions':>14}{'instr/MAC':>11}{'share':>8}"
                 f"{'est. cycles':>13}{'est. ms':>10}"]
        for r in d["layers"]:
            ipm = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "-"
            lines.append(f"{r['label'][:27]:<28}{r['op'][:11]:<12}{r['macs']:>10,}{r['instructions']:>14,}{ipm:>11}"
                         f"{100 * r['share']:>7.1f}%{r['est_cycles']:>13,.0f}{r['est_ms']:>10.3f}")
        t = d["total"]
        ipm = f"{t['instructions_per_mac']:.2f}" if t["instructions_per_mac"] is not None else "-"
        lines.append(f"{'total (one inference)':<28}{'':<12}{t['macs']:>10,}{t['instructions']:>14,}{ipm:>11}"
                     f"{100.0:>7.1f}%{t['est_cycles']:>13,.0f}{t['est_ms']:>10.3f}")
        v = d["vectors"]
        lines.append(f"one inference = input vector {d['vector']} of {v['count']} ({v['source']}); over all "
                     f"{v['count']}: {v['min']:,}..{v['max']:,} instructions (mean {v['mean']:,.1f})")
        f, r = d["memory"]["flash"], d["memory"]["ram"]
        used = d["memory"].get("stack_used")
        inf = d["memory"].get("inference_stack")
        lines.append(f"flash {f['total']:,} B: code {f['code']:,}, weights {f['weights']:,}, runtime {f['runtime']:,}"
                     f" | RAM {r['total']:,} B: arena {r['arena']:,}, static {r['static']:,}, stack {r['stack']:,} "
                     f"reserved ({used if used is not None else '?'} used"
                     + (f", {inf} by the inference" if inf is not None else "") + ")")
        lines.append("cycles and ms are ESTIMATES from instruction classes (core timing table); instruction counts "
                     "are exact")
        return "\n".join(lines)


def profile(build_dir: str | Path, board: str | None = None, inputs: str | Path | np.ndarray | None = None,
            count: int = 8, seed: int = 0, vector: int = 0, write: bool = True) -> ProfileReport:
    """Count instructions per inference and per layer for a build; write profile.json/.html."""
    from ...ir.graph import Graph
    from ...sim import quantize_input, simulate

    build_dir = Path(build_dir).resolve()
    manifest = _load_manifest(build_dir)
    candidates = profile_boards_for(manifest, board)
    est_board = build_board(manifest)
    core = get_core(manifest["target"])
    graph = Graph.load(build_dir)
    layers = manifest["layers"]

    if inputs is None:
        codes, source = profile_inputs(graph, count, seed), f"uniform random input codes, seed {seed}"
    else:
        x = np.load(inputs) if not isinstance(inputs, np.ndarray) else inputs
        x = np.asarray(x, np.float32).reshape((-1,) + tuple(graph.input_quant.float_shape))
        codes, source = quantize_input(graph, x).reshape(x.shape[0], -1), str(inputs) if not isinstance(
            inputs, np.ndarray) else "array"
    if not 0 <= vector < codes.shape[0]:
        raise VerificationError(f"--vector {vector}: there are {codes.shape[0]} input vectors")
    ref = simulate(graph, codes.reshape((codes.shape[0],) + tuple(graph.tensors[graph.inputs[0]].shape)))
    ref = ref[graph.outputs[0]].reshape(codes.shape[0], -1)
    out_t = graph.tensors[graph.outputs[0]]

    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as d:
        work = Path(d)
        for i, run_board in enumerate(candidates):
            try:
                elf = firmware_for(build_dir, manifest, run_board, work)
                break
            except TargetError:
                if i == len(candidates) - 1:
                    raise
        syms = tc.symbols(elf)
        zones, layer_zone = _zones(syms, layers)
        main = [s for s in syms if s["name"] == "main"]
        if not main:
            raise BuildDirError("the firmware has no main (harness) symbol")
        text = [s for s in syms if s["type"] in "tT"]
        code = (min(s["addr"] for s in text), max(s["addr"] + max(s["size"], 2) for s in text))
        codes.astype(np.dtype(manifest["input"]["dtype"])).tofile(work / "inputs.bin")
        t0 = time.monotonic()
        counts = run_counted(elf, run_board.qemu_machine, work, zones, code, start=zones[0].lo,
                             stop=(main[0]["addr"], main[0]["addr"] + main[0]["size"]), detail=vector)
        seconds = time.monotonic() - t0
        got = np.fromfile(work / "outputs.bin", dtype=np.dtype(out_t.dtype))
        insns = disassembly(elf, *code, arch=core.arch if core.has_mve else None)  # objdump names only some
        mem = breakdown(elf)
    if got.size != ref.size or np.any(got.reshape(ref.shape).astype(np.int64) != ref.astype(np.int64)):
        raise VerificationError("the profiled firmware's outputs differ from the simulator; run `edgekit verify`")
    if len(counts.windows) < codes.shape[0]:
        raise ToolchainError(f"counted {len(counts.windows)} inferences for {codes.shape[0]} input vectors")
    # The harness calls ek_model_run once per vector, in order, then once more on the first
    # vector to measure the arena it touches: that extra call is not one of the vectors.
    counts.windows = counts.windows[:codes.shape[0]]

    report = _report(build_dir, manifest, core, run_board, est_board, layers, zones, layer_zone, counts, insns,
                     vector, source, mem)
    report["seconds"] = round(seconds, 3)
    keys = {"EK_STACK_USED": "stack_used", "EK_INFERENCE_STACK": "inference_stack", "EK_ARENA_TOUCHED": "arena_touched"}
    for line in counts.log.splitlines():
        key, _, value = line.partition("=")
        if key in keys and value.strip().isdigit():
            report["memory"][keys[key]] = int(value)
    rep = ProfileReport(report)
    if write:
        _write(build_dir, rep)
    return rep


def _report(build_dir, manifest, core, run_board, est_board, layers, zones, layer_zone, counts, insns, vector,
            source, mem) -> dict:
    nz = len(zones)
    window = counts.windows[vector]
    per_zone_classes = [dict() for _ in range(nz + 1)]
    per_zone_cycles = [0.0] * (nz + 1)
    unknown = set()
    for (z, pc), (n, taken) in counts.detail.items():
        mnem, ops = insns.get(pc, ("?", ""))
        if mnem == "?":
            unknown.add(f"0x{pc:x}")
        cls, regs = classify(mnem, ops, core)
        per_zone_classes[z][cls] = per_zone_classes[z].get(cls, 0) + n
        per_zone_cycles[z] += instruction_cost(cls, regs, n, taken, core.timing)
    for z, n in counts.outside.items():  # code outside the firmware's text (none expected)
        per_zone_classes[z]["other"] = per_zone_classes[z].get("other", 0) + n
        per_zone_cycles[z] += n * core.timing.get("other", 1.0)
    total = sum(window)
    clock = est_board.clock_hz
    rows = []

    def row(label, name, op, macs, zs):
        n = sum(window[z] for z in zs)
        classes: dict[str, int] = {}
        for z in zs:
            for k, v in per_zone_classes[z].items():
                classes[k] = classes.get(k, 0) + v
        cyc = sum(per_zone_cycles[z] for z in zs)
        return {"label": label, "name": name, "op": op, "macs": macs, "instructions": n,
                "instructions_per_mac": (n / macs) if macs else None, "share": n / total if total else 0.0,
                "classes": dict(sorted(classes.items())), "est_cycles": round(cyc, 1),
                "est_ms": cyc / clock * 1e3, "functions": [zones[z].name for z in zs if z < nz]}

    for i, layer in enumerate(layers):
        zs = layer_zone.get(i, [])
        r = row(f"{i} {layer['name']}", layer["name"], layer["op"], layer["macs"], zs)
        r["index"] = i
        if not zs:
            r["note"] = "no code of its own (aliases its input, or inlined)"
        rows.append(r)
    rows.append(row("(glue: ek_model_run)", GLUE, "-", 0, [0]))
    if window[nz]:
        rows.append(row("(unattributed)", "", "-", 0, [nz]))
    macs = sum(layer["macs"] for layer in layers)
    cycles = sum(r["est_cycles"] for r in rows)
    assert sum(r["instructions"] for r in rows) == total
    totals = [sum(w) for w in counts.windows]
    return {
        "edgekit_profile": 1,
        "build_dir": str(build_dir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": manifest["target"], "board": manifest["board"], "counted_on": run_board.qemu_machine,
        "clock_hz": clock,
        "clock_source": f"{est_board.name} clock_hz" + (
            f"; the firmware as built starts at {est_board.reset_clock_hz / 1e6:g} MHz"
            if est_board.reset_clock_hz and est_board.reset_clock_hz != clock else ""),
        "definition": DEFINITION,
        "vector": vector,
        "vectors": {"count": len(totals), "source": source, "instructions": totals, "min": min(totals),
                    "max": max(totals), "mean": sum(totals) / len(totals)},
        "layers": rows,
        "total": {"instructions": total, "macs": macs, "instructions_per_mac": total / macs if macs else None,
                  "est_cycles": round(cycles, 1), "est_ms": cycles / clock * 1e3},
        "whole_run_instructions": counts.all_instructions,
        "timing": core.timing, "timing_source": core.timing_source,
        "memory": {"flash": mem["flash"], "ram": mem["ram"], "weight_symbols": mem["weight_symbols"]},
        "unknown_addresses": sorted(unknown),
    }


def _write(build_dir: Path, rep: ProfileReport) -> None:
    from ...build import MANIFEST

    data = rep.to_json()
    tmp = build_dir / f".{PROFILE_JSON}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, build_dir / PROFILE_JSON)
    (build_dir / PROFILE_HTML).write_text(_html(data))
    manifest_path = build_dir / MANIFEST
    m = json.loads(manifest_path.read_text())
    m["profile"] = {"file": PROFILE_JSON, "counted_on": data["counted_on"], "vector": data["vector"],
                    "instructions": data["total"]["instructions"], "est_cycles": data["total"]["est_cycles"],
                    "est_ms": data["total"]["est_ms"], "clock_hz": data["clock_hz"],
                    "stack_used": data["memory"].get("stack_used"),
                    "layers": {r["name"] or r["label"]: r["instructions"] for r in data["layers"]}}
    tmp = build_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    os.replace(tmp, manifest_path)


def _html(d: dict) -> str:
    import html

    rows = d["layers"]
    width = 520
    top = max((r["instructions"] for r in rows), default=1) or 1
    bars = []
    for i, r in enumerate(rows):
        w = max(1, round(width * r["instructions"] / top)) if r["instructions"] else 0
        y = 8 + i * 26
        bars.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(r["label"][:40])}</text>'
                    f'<rect x="260" y="{y}" width="{w}" height="18" fill="#4a7bd0"/>'
                    f'<text x="{266 + w}" y="{y + 14}" font-size="12">{r["instructions"]:,} '
                    f'({100 * r["share"]:.1f}%)</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 420}" height="{16 + 26 * len(rows)}">'
           + "".join(bars) + "</svg>")
    def ipm(r):
        return "" if r["instructions_per_mac"] is None else f"{r['instructions_per_mac']:.2f}"

    body = "\n".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(r['op'])}</td><td>{r['macs']:,}</td>"
        f"<td>{r['instructions']:,}</td><td>{ipm(r)}</td><td>{100 * r['share']:.1f}%</td>"
        f"<td>{r['est_cycles']:,.0f}</td><td>{r['est_ms']:.3f}</td></tr>" for r in rows)
    t = d["total"]
    return f"""<!doctype html><meta charset="utf-8"><title>edgekit profile</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:right}} td:first-child{{text-align:left}}</style>
<h1>edgekit profile: {html.escape(d['target'])} on {html.escape(d['board'])}</h1>
<p>Instructions counted exactly on QEMU {html.escape(d['counted_on'])}; cycles and ms are estimates
({html.escape(d['timing_source'])}) at {d['clock_hz'] / 1e6:g} MHz. {html.escape(d['definition'])}.</p>
{svg}
<table><tr><th>layer</th><th>op</th><th>MACs</th><th>instructions</th><th>instr/MAC</th><th>share</th>
<th>est. cycles</th><th>est. ms</th></tr>
{body}
<tr><th>total</th><th></th><th>{t['macs']:,}</th><th>{t['instructions']:,}</th><th></th><th>100%</th>
<th>{t['est_cycles']:,.0f}</th><th>{t['est_ms']:.3f}</th></tr></table>
"""
