"""Instruction classes for the cycle estimate: each executed instruction, as objdump prints it,
is one of ALU, multiply, MAC, long multiply, divide, SIMD, load, store, load/store multiple,
branch, call, IT, FPU, MVE or other, and costs what the core's ``[timing]`` table says."""
from __future__ import annotations

import re
from pathlib import Path

from ....targets import Core
from .. import toolchain as tc

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
