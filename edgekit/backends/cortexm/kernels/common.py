"""Helpers the kernel variants share: weights as int16 pairs, the one-multiply requantization
(its constants: ``contract.fast_double_rounding``) and its template context, fused residual adds, in-place detection, input extension."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ....ir import contract


# ---------------------------------------------------------------------------------------
# Requantization: TFLite double rounding as one SMLAL
# ---------------------------------------------------------------------------------------
def scalar_expr(rq, x_bound: int) -> str | None:
    """C for the per-tensor ``requant(rq, x)`` (with its clamp) as a format string with ``{x}``,
    for |x| <= x_bound, in a one-multiply form; None where only the reference form applies.

    Double rounding with a left shift L (TFLite's ADD shifts its inputs by 20) is the same
    arithmetic on x * 2^L when that product fits in int32. Besides the SMLAL form
    (fast_double_rounding) it recognises M = 2^30, S = 31 (a ratio of exactly 1/2):
    SRDHM(x * 2^L, 2^30) = floor(x * 2^(L-1) + 1/2) = x * 2^(L-1) for L >= 1.
    """
    if rq is None or rq.rounding != "double" or len(rq.multiplier) != 1:
        return None
    m, sft = rq.multiplier[0], rq.shift[0]
    big = rq.lo == -(2**31) and rq.hi == 2**31 - 1
    L = rq.left_shift + max(31 - sft, 0)
    if x_bound * 2**L >= 2**31:
        return None
    zp = f" + {rq.zero_point}" if rq.zero_point else ""
    if m == 2**30 and sft == 31 and L >= 1:
        core = f"(int32_t)((uint32_t)({{x}}) << {L - 1}){zp}" if L > 1 else f"({{x}}){zp}"
        if abs(rq.zero_point) + x_bound * 2**(L - 1) >= 2**31:
            return None
    else:
        f = contract.fast_double_rounding(replace(rq, left_shift=0)) if sft >= 31 else None
        if f is None:
            return None
        xs = f"(int32_t)((uint32_t)({{x}}) << {L})" if L else "({x})"
        core = f"ek_dsp_rq({xs}, {f['m'][0]}, {f['ahi'][0]}, {f['sh'][0]})"
    if big:
        return core
    pre, post = clamp_parts(rq.lo, rq.hi)
    return pre + core + post


def clamp_parts(lo: int, hi: int) -> tuple[str, str]:
    """C around an int32 expression v: clamp(v, lo, hi), with SSAT/USAT where the range allows."""
    for bits in (8, 16):
        if lo == -(2 ** (bits - 1)) and hi == 2 ** (bits - 1) - 1:
            return "__ssat(", f", {bits})"
        if lo == 0 and hi == 2**bits - 1:
            return "__usat(", f", {bits})"
    lo_s = "(-2147483647 - 1)" if lo == -(2**31) else str(lo)
    return "ek_clamp32(", f", {lo_s}, {hi})"


def pad_channels(values, n: int):
    """``values`` extended to ``n`` entries by repeating the last (padding channels)."""
    v = list(values)
    return v + [v[-1]] * (n - len(v)) if v else v


def requant_ctx(rq, channels_padded: int) -> dict:
    """Template context of the one-multiply epilogue (ops_dsp/epilogue.j2), per-channel
    constants padded to ``channels_padded``; ``{"fast": False}`` where the reference form applies."""
    f = contract.fast_double_rounding(rq)
    if f is None:
        return {"fast": False}
    if f["per_channel"]:
        f = {k: (pad_channels(v, channels_padded) if isinstance(v, list) else v) for k, v in f.items()}
    pre, post = clamp_parts(rq.lo, rq.hi)
    rec = [v for trip in zip(f["m"], f["ahi"], f["sh"]) for v in trip]
    return {"fast": True, "fast_pc": f["per_channel"], "fm": f["m"], "fahi": f["ahi"], "fsh": f["sh"],
            "frec": rec, "clamp_pre": pre, "clamp_post": post}


#: a GEMM layer stores its per-channel requantization as (M, shift) with Ahi looked up by shift
#: (compact_records) from this many k-pair words per output pixel on: about half an instruction per
#: output more, under 1% of a layer this long, for 6 of 12 flash bytes per channel
COMPACT_RECORD_MIN_KWORDS = 32


def compact_records(rqc: dict) -> dict | None:
    """The per-channel constants of the one-multiply epilogue (``requant_ctx``/``smmlar_ctx``: M, H, S
    per channel, H = Ahi or 2 Ahi) as M per channel, S per channel as int16 halves, and a table
    ``H[S]``, where H depends on the shift only (H = (1 + 2 zp) << (S - 1): fast_double_rounding's
    Ahi = (1 + 2 zp) 2^(e - 2)); None where it does not. Flash: 6 bytes per channel and a word per
    shift value instead of 12 bytes per channel."""
    if not (rqc.get("fast") and rqc.get("fast_pc")):
        return None
    table: dict[int, int] = {}
    for h, sh in zip(rqc["fahi"], rqc["fsh"]):
        if not 0 < sh < 64 or table.setdefault(sh, h) != h:
            return None
    return {"m": list(rqc["fm"]), "s": list(rqc["fsh"]),
            "h": [table.get(k, 0) for k in range(max(table) + 1)]}


def doubled_constants(rq, acc_bounds) -> list[tuple[int, int, int]] | None:
    """Per channel (M, 2 Ahi, e) of the SMMLAR epilogue, for accumulators of absolute value at most
    ``acc_bounds[c]``; None where it does not apply.

    With fast_double_rounding's constants, the requantized code is floor(num / 2^(31 + e)) where
    num = acc * M + Ahi * 2^32 + 2^30 - s * 2^31 (s = 1 for acc < 0). Then
    2 num = 2 acc * M + (2 Ahi - s) * 2^32 + 2^31, which is SMMLAR's rounding form:
    SMMLAR(2 acc, M, 2 Ahi - s) = floor(2 num / 2^32) = floor(num / 2^31), and an arithmetic shift
    by e finishes (nested floors of divisions by powers of two are one floor). It needs 2 acc and
    2 Ahi - 1 in int32 and |num| < 2^62 (floor(num / 2^31) in int32)."""
    f = contract.fast_double_rounding(rq)
    if f is None:
        return None
    n = len(acc_bounds)
    ms, ahis, shs = (v if len(v) > 1 else v * n for v in (f["m"], f["ahi"], f["sh"]))
    out = []
    for c in range(n):
        b, m, ahi = int(acc_bounds[c]), ms[c], ahis[c]
        if 2 * b >= 2**31 or not -(2**31) < 2 * ahi < 2**31 \
                or b * m + abs(ahi) * 2**32 + 2**31 + 2**30 >= 2**62:
            return None
        out.append((m, 2 * ahi, shs[c] + 1))
    return out


def doubled_rq(acc, m: int, k2: int, e: int, signed_round: bool = True) -> np.ndarray:
    """What the SMMLAR epilogue computes for int32 accumulators ``acc`` (before doubling), with
    (M, 2 Ahi, e) from :func:`doubled_constants`: SMMLAR(2 acc, M, 2 Ahi + (acc >> 31)) >> e
    (tests/test_kernels_dsp.py compares it with the contract's double rounding); ``signed_round``
    False: without the term (acc >> 31), as dw3_int8 emits it under a clamp floor at or above the zero point."""
    acc = np.asarray(acc, dtype=np.int64)
    ra = np.int64(k2) + ((acc >> 31) if signed_round else 0)
    return ((ra * 2**32 + 2 * acc * np.int64(m) + 2**31) >> 32) >> e


def accumulator_bounds(bias: np.ndarray, weights_per_channel: np.ndarray, x_dtype: str, zp: int) -> np.ndarray:
    """Per output channel, the largest |bias + sum(w * (x - zp))| over every input of the type: what
    doubled_constants needs. ``weights_per_channel``: (channels, taps)."""
    info = np.iinfo(x_dtype)
    x_abs = max(zp - int(info.min), int(info.max) - zp)
    return np.abs(np.asarray(bias, np.int64)) + np.abs(np.asarray(weights_per_channel, np.int64)).sum(axis=1) * x_abs


def smmlar_ctx(rqc: dict, rq, bounds, channels_padded: int) -> dict:
    """requant_ctx's context switched to the SMMLAR epilogue (ek_dsp_rq2: M, 2 Ahi, e) when every
    channel's accumulator bound allows it (doubled_constants), else ``rqc`` unchanged."""
    if not rqc.get("fast"):
        return rqc
    dbl = doubled_constants(rq, bounds)
    if dbl is None:
        return rqc
    if not rqc["fast_pc"]:
        dbl = dbl[:1]
    ms, ks, es = ([v[i] for v in dbl] for i in range(3))
    if rqc["fast_pc"]:
        ms, ks, es = (pad_channels(v, channels_padded) for v in (ms, ks, es))
    return {**rqc, "smmlar": True, "fm": ms, "fahi": ks, "fsh": es,
            "frec": [v for trip in zip(ms, ks, es) for v in trip]}


def residual_ctx(node, graph) -> dict:
    """Fast forms of a fused residual add's three requantizations (conv2d.c.j2's arithmetic)."""
    res = node.attrs.get("residual")
    if not res:
        return {}
    rq = node.attrs["requant"]
    zp_r = graph.tensors[node.inputs[3]].zero_point
    info = np.iinfo(graph.tensors[node.inputs[3]].dtype)
    r_bound = max(abs(int(info.min) - zp_r), abs(int(info.max) - zp_r))
    y_bound = max(abs(rq.lo - rq.zero_point), abs(rq.hi - rq.zero_point))
    ra, rb = res["in_requant"]
    ea, eb = scalar_expr(ra, y_bound), scalar_expr(rb, r_bound)
    out = res["requant"]
    # the sum of the two rescaled operands: bounded by the static check (docs/integer-contract.md 7c)
    eo = scalar_expr(out, 2**31 - 1) if out is not None else None
    return {"res_a": ea, "res_b": eb, "res_o": eo}


# ---------------------------------------------------------------------------------------
# Weights as int16 pairs
# ---------------------------------------------------------------------------------------
def pair_words(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """int32 words holding (lo, hi) int16 halves (lo in bits 0-15): what SMLAD multiplies."""
    w = (np.asarray(lo, np.int64) & 0xFFFF) | ((np.asarray(hi, np.int64) & 0xFFFF) << 16)
    return np.where(w >= 2**31, w - 2**32, w).astype(np.int64)


def byte_words(b0: np.ndarray, b1: np.ndarray, b2: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """int32 words holding four int8 bytes b0..b3 (b0 in bits 0-7): SXTB16 of the word gives the
    int16 halves (b0, b2), SXTB16 of the word rotated by 8 gives (b1, b3)."""
    w = sum((np.asarray(b, np.int64) & 0xFF) << (8 * k) for k, b in enumerate((b0, b1, b2, b3)))
    return np.where(w >= 2**31, w - 2**32, w).astype(np.int64)


class Int8WeightsRefusal:
    """Mixed in before a variant that stores its weights as int8 bytes: its refusals, plus weights
    that do not fit in [-128, 127] (input 1 of the node)."""

    def refusal(self, node, graph, plan) -> str | None:
        why = super().refusal(node, graph, plan)  # type: ignore[misc]
        if why:
            return why
        w = graph.constants[node.inputs[1]]
        if w.size and (int(w.min()) < -128 or int(w.max()) > 127):
            return "weights outside the int8 range"
        return None


def run_pairs(length: int) -> list[tuple[int, int]]:
    """The order in which the im2col extension lays out a run of ``length`` input bytes as
    int16 pairs (-1: a zero half). A word of 4 bytes b0..b3 becomes SXTB16 -> (b0, b2) and
    SXTB16 of the word rotated by 8 -> (b1, b3); leftover bytes pair up in order."""
    pairs = []
    q, r = divmod(length, 4)
    for g in range(q):
        pairs += [(4 * g, 4 * g + 2), (4 * g + 1, 4 * g + 3)]
    base = 4 * q
    if r == 1:
        pairs.append((base, -1))
    elif r == 2:
        pairs.append((base, base + 1))
    elif r == 3:
        pairs += [(base, base + 1), (base + 2, -1)]
    return pairs


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
def in_place(plan, a: str, b: str) -> bool:
    """Whether tensors a and b overlap in the arena (the planner runs the node in place)."""
    pa, pb = plan.placements.get(a), plan.placements.get(b)
    if pa is None or pb is None or pa.buffer != pb.buffer or pa.buffer != "arena":
        return False
    return pa.offset < pb.offset + pb.size and pb.offset < pa.offset + pa.size


def wider_residual_in_place(node, graph, plan) -> str | None:
    """Why a GEMM kernel may not run a fused residual add in place over a residual held in a wider
    type than its output (e.g. int16 under int8): writing a block of output pixels overwrites
    residual bytes of pixels the block has not read yet (found by edgekit fuzz, docs/fuzz.md item 5);
    the reference kernel, which finishes each output before the next, takes such nodes."""
    if not node.attrs.get("residual") or len(node.inputs) < 4 or plan is None:
        return None
    r, y = graph.tensors[node.inputs[3]], graph.tensors[node.outputs[0]]
    if r.itemsize > y.itemsize and in_place(plan, node.inputs[3], node.outputs[0]):
        return f"in place over its {r.dtype} residual"
    return None


def extend_insn(dtype: str) -> str | None:
    """The instruction that widens two input bytes to int16 halves adding an offset (None:
    an input type the DSP kernels do not read)."""
    return {"int8": "sxtab16", "uint8": "uxtab16"}.get(dtype)


def offset_word(zp: int) -> int:
    """(-zp, -zp) as two int16 halves: SXTAB16/UXTAB16 add it to the extended bytes."""
    h = (-zp) & 0xFFFF
    w = h | (h << 16)
    return w - 2**32 if w >= 2**31 else w


def valid_taps(o: int, i: int, k: int, s: int, pad: int, d: int = 1) -> int:
    """Sum over the o output positions of the taps that land inside an input of length i
    (the taps a kernel that skips the padding executes)."""
    return sum(sum(1 for kk in range(k) if 0 <= oo * s - pad + kk * d < i) for oo in range(o))


def conv_valid_taps(info: dict) -> tuple[int, int]:
    """(kernel rows, kernel columns) inside the input, summed over the output rows and columns,
    of the conv described by ``info`` (nas.cost.layer_info): the taps executed per channel."""
    ih, iw, _ = info["in"]
    oh, ow, _ = info["out"]
    kh, kw = info["kernel"]
    sh, sw = info["stride"]
    dh, dw = info.get("dilation", (1, 1))
    return (valid_taps(oh, ih, kh, sh, info["pad"][0], dh), valid_taps(ow, iw, kw, sw, info["pad"][1], dw))


def first_work(f: dict, terms: tuple[tuple[str, int], ...]) -> float:
    """The first nonzero of ``terms`` (feature, MACs per count) in ``f``, times its MACs (0: none)."""
    for k, per in terms:
        if f.get(k):
            return float(f[k]) * per
    return 0.0
