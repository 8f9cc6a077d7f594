"""Optimized kernels for cores with the DSP extension (Cortex-M4/M7/M33/M55): selection and
build-time data layout. The C lives in ``templates/cortexm/ops_dsp/`` (docs/kernels.md).

Every optimized kernel computes exactly the integers of its reference kernel
(``templates/cortexm/ops/``): it only changes the order of the int32 additions (exact: the
static overflow check bounds every partial sum, and SMLAD's sums wrap like int32 adds)
and the instructions of the epilogue, never its arithmetic. What it exploits is what the
code generator knows at build time: shapes, strides and zero points become constants,
weights are stored as int16 pairs in the order in which the inner loop consumes them,
and the TFLite double-rounding requantization is folded into one 64-bit multiply-add
with per-channel constants (``contract.fast_double_rounding``).

Selection (``select``) is per node: a node gets an optimized kernel when the core has
"dsp", the build asks for optimized kernels, and the node's attributes fit a kernel;
otherwise the reference kernel, with the reason recorded in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...ir import contract
from ...ops.conv2d import conv_geometry

#: int16 weights may take at most this share of the board's flash (else the reference kernel),
#: and must leave the model's int8 weights plus this margin (code, runtime) free.
FLASH_SHARE = 0.5
FLASH_MARGIN = 64 * 1024
#: im2col block: pixels per block (the 3x2 micro-kernel: 3 pixels x 2 output channels).
GEMM_PIXELS = 3
#: k-pair steps per iteration of the micro-kernels' loops.
GEMM_UNROLL = 4
DENSE_ROWS = 4
DENSE_UNROLL = 2  # k-quads per loop iteration
#: Stack bytes an optimized kernel may take for its scratch buffers when no arena gap fits.
STACK_SCRATCH_LIMIT = 8192


@dataclass
class Selection:
    """The kernel chosen for one node."""

    kind: str                      # "conv2d_gemm", "dw3", "dwk", "dense", "mve_gemm", "mve_dense" or "reference"
    template: str | None = None    # under templates/cortexm/ (ops_dsp/..., ops_mve/...)
    reason: str = ""               # why the reference kernel (kind == "reference")
    ctx: dict = field(default_factory=dict)
    weight_bytes: int = 0          # flash bytes of the re-laid weights
    scratch: int | None = None     # arena offset of the kernel's scratch buffer (None: on the stack)

    @property
    def optimized(self) -> bool:
        return self.kind != "reference"

    def describe(self) -> str:
        if not self.optimized:
            return f"reference ({self.reason})" if self.reason else "reference"
        return f"optimized {self.kind}: {self.ctx.get('summary', '')}".rstrip(": ")


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


def _pad_channels(values, n: int):
    v = list(values)
    return v + [v[-1]] * (n - len(v)) if v else v


def _requant_ctx(rq, channels_padded: int) -> dict:
    f = contract.fast_double_rounding(rq)
    if f is None:
        return {"fast": False}
    if f["per_channel"]:
        f = {k: (_pad_channels(v, channels_padded) if isinstance(v, list) else v) for k, v in f.items()}
    pre, post = clamp_parts(rq.lo, rq.hi)
    rec = [v for trip in zip(f["m"], f["ahi"], f["sh"]) for v in trip]
    return {"fast": True, "fast_pc": f["per_channel"], "fm": f["m"], "fahi": f["ahi"], "fsh": f["sh"],
            "frec": rec, "clamp_pre": pre, "clamp_post": post}


def _residual_ctx(node, graph) -> dict:
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
# Selection
# ---------------------------------------------------------------------------------------
def _in_place(plan, a: str, b: str) -> bool:
    """Whether tensors a and b overlap in the arena (the planner runs the node in place)."""
    pa, pb = plan.placements.get(a), plan.placements.get(b)
    if pa is None or pb is None or pa.buffer != pb.buffer or pa.buffer != "arena":
        return False
    return pa.offset < pb.offset + pb.size and pb.offset < pa.offset + pa.size


def _ext(dtype: str) -> str | None:
    return {"int8": "sxtab16", "uint8": "uxtab16"}.get(dtype)


def _offset_word(zp: int) -> int:
    """(-zp, -zp) as two int16 halves: SXTAB16/UXTAB16 add it to the extended bytes."""
    h = (-zp) & 0xFFFF
    w = h | (h << 16)
    return w - 2**32 if w >= 2**31 else w


def select_conv_gemm(node, graph) -> Selection:
    g = conv_geometry(node, graph)
    x = graph.tensors[node.inputs[0]]
    if _ext(x.dtype) is None:
        return Selection("reference", reason=f"{x.dtype} input")
    w = graph.constants[node.inputs[1]].astype(np.int64)          # (oc, kh, kw, ic)
    bias = graph.constants[node.inputs[2]].astype(np.int64)
    oc, kh, kw, ic = w.shape
    # runs of contiguous input bytes: a kernel row when there is no horizontal dilation, else one tap
    if g["dw"] == 1:
        runs = [(ky, 0) for ky in range(kh)]
        run_len = kw * ic
    else:
        runs = [(ky, kx) for ky in range(kh) for kx in range(kw)]
        run_len = ic
    rp = run_pairs(run_len)
    words_per_run = len(rp)
    kwords = len(runs) * words_per_run                           # k-pairs per output pixel
    flat = w.reshape(oc, -1)                                       # (ky, kx, ic) order
    oc_pad = oc + (oc & 1)
    wp = np.zeros((oc_pad, kwords, 2), np.int64)
    for r, (ky, kx0) in enumerate(runs):
        for j, (a, b) in enumerate(rp):
            for half, e in enumerate((a, b)):
                if e < 0:
                    continue
                if g["dw"] == 1:
                    kx, c = divmod(e, ic)
                else:
                    kx, c = kx0, e
                wp[:oc, r * words_per_run + j, half] = flat[:, (ky * kw + kx) * ic + c]
    words = pair_words(wp[..., 0], wp[..., 1])                     # (oc_pad, kwords)
    # stream per channel pair: the two biases, for each k-pair j: word(c0, j), word(c1, j), then
    # (M, Ahi, e - 1) of both channels for the one-multiply requantization
    rq = node.attrs.get("requant")
    rqc = _requant_ctx(rq, oc_pad)
    pairs = words.reshape(oc_pad // 2, 2, kwords).transpose(0, 2, 1).reshape(oc_pad // 2, -1)
    b2 = np.array(bias.tolist() + [0] * (oc_pad - oc), np.int64).reshape(-1, 2)
    parts = [b2, pairs]
    if rqc.get("fast") and rqc.get("fast_pc"):
        parts.append(np.array(rqc["frec"], np.int64).reshape(-1, 6))
    stream = np.concatenate(parts, axis=1).reshape(-1)
    ctx = {
        "g": g, "runs": runs, "run_len": run_len, "words_per_run": words_per_run, "kwords": kwords,
        "oc_pad": oc_pad, "npix": g["oh"] * g["ow"], "ext": _ext(x.dtype), "offset_word": _offset_word(x.zero_point),
        "tap_mode": ic % 4 == 0, "unroll": 2 * GEMM_UNROLL if kwords > 6 * GEMM_UNROLL else GEMM_UNROLL,
        "pixels": GEMM_PIXELS,
        "w_words": stream.tolist(), "uses_bias": False,
        "scratch_bytes": 4 * GEMM_PIXELS * kwords,
        "tail_bytes": GEMM_PIXELS * oc * graph.tensors[node.outputs[0]].itemsize
        if (g["oh"] * g["ow"]) % GEMM_PIXELS else 0,
        "summary": f"im2col {kwords} int16 pairs/pixel, {GEMM_PIXELS}x2 SMLAD micro-kernel",
    }
    ctx.update(rqc)
    ctx.update(_residual_ctx(node, graph))
    if node.attrs.get("residual"):
        ctx["summary"] += ", fused residual add"
    return Selection("conv2d_gemm", "ops_dsp/conv2d_gemm.c.j2", ctx=ctx, weight_bytes=4 * stream.size)


def select_dwk(node, graph, plan) -> Selection:
    """Any depthwise kernel (size, stride, padding, dilation) with depth multiplier 1, not in
    place: four channels per step, the input word split by SXTAB16 into (x - zp) halves and
    multiplied with SMLABB/SMLATT (one product each, so channels never mix), weights as
    int16 pairs (c, c + 2) and (c + 1, c + 3) per tap; channels past the last multiple of 4
    one by one. Taps outside the input are skipped, as in the reference."""
    g = conv_geometry(node, graph)
    x = graph.tensors[node.inputs[0]]
    a = node.attrs
    if a["depth_multiplier"] != 1:
        return Selection("reference", reason="depthwise kernel other than kh x 3 with a depth multiplier")
    delay = 0
    inplace = plan is not None and _in_place(plan, node.inputs[0], node.outputs[0])
    if inplace:
        # in place (the planner's depthwise_inplace_rows: stride 1, same shape, same offset): output
        # pixel p may overwrite input pixel p only once every output reading it is done, the last
        # being p + pad_t * ow + pad_l; so outputs wait in a small ring of that many pixels
        px, py = plan.placements[node.inputs[0]], plan.placements[node.outputs[0]]
        if px.offset != py.offset or graph.tensors[node.inputs[0]].shape != graph.tensors[node.outputs[0]].shape \
                or a["stride"] != [1, 1] or a["dilation"] != [1, 1]:
            return Selection("reference", reason="depthwise kernel other than kh x 3, partly in place")
        delay = g["pad_t"] * g["ow"] + g["pad_l"]
    w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
    kh, kw, oc = w.shape
    c4 = oc - oc % 4
    taps = w.reshape(kh * kw, oc)
    quads = taps[:, :c4].reshape(kh * kw, c4 // 4, 4)
    words = np.stack([pair_words(quads[..., 0], quads[..., 2]), pair_words(quads[..., 1], quads[..., 3])], axis=-1)
    rq = node.attrs.get("requant")
    ctx = {"g": g, "c4": c4, "w_words": words.reshape(-1).tolist(), "tail_w": taps[:, c4:].reshape(-1).tolist(),
           "ext": _ext(x.dtype), "offset_word": _offset_word(x.zero_point), "uses_bias": True,
           "inplace": inplace, "delay": delay,
           "summary": f"{kh} x {kw} taps, 4 channels per step: SXTAB16, SMLABB/SMLATT"}
    if ctx["inplace"]:
        ctx["scratch_bytes"] = (delay + 1) * oc * graph.tensors[node.outputs[0]].itemsize
        ctx["summary"] += f", in place with {delay + 1} pending output pixels"
    ctx.update(_requant_ctx(rq, oc))
    ctx.update(_residual_ctx(node, graph))
    if node.attrs.get("residual"):
        ctx["summary"] += ", fused residual add"
    return Selection("dwk", "ops_dsp/dwk.c.j2", ctx=ctx, weight_bytes=4 * words.size + 2 * (kh * kw * (oc - c4)))


def select_dw(node, graph, plan=None) -> Selection:
    g = conv_geometry(node, graph)
    x = graph.tensors[node.inputs[0]]
    a = node.attrs
    if _ext(x.dtype) is None:
        return Selection("reference", reason=f"{x.dtype} input")
    if g["kw"] != 3 or g["dw"] != 1 or g["dh"] != 1 or g["sw"] not in (1, 2):
        return select_dwk(node, graph, plan)
    w = graph.constants[node.inputs[1]].astype(np.int64)          # (kh, kw, oc)
    bias = graph.constants[node.inputs[2]].astype(np.int64)
    kh, oc = g["kh"], g["oc"]
    rq = a.get("requant")
    rqc = _requant_ctx(rq, oc)
    # Per channel and kernel row: stride 1: (w0, w1), (w1, w2); stride 2: (w0, w1), (w2, 0).
    pairs = np.zeros((kh, oc, 2), np.int64)
    for c in range(oc):
        for ky in range(kh):
            w0, w1, w2 = (int(v) for v in w[ky, :, c])
            second = (w1, w2) if g["sw"] == 1 else (w2, 0)
            pairs[ky, c] = [pair_words(w0, w1).item(), pair_words(*second).item()]
    # The ring's slot s holds kernel row (s - rot) mod kh, rot = (oy * sh) mod kh; one record per
    # channel and rotation: the pairs in slot order, the bias, then (M, Ahi, e - 1) if per channel.
    rots = sorted({(oy * g["sh"]) % kh for oy in range(g["oh"])})
    recs = []
    for rot in rots:
        for c in range(oc):
            rec = []
            for slot in range(kh):
                rec += pairs[(slot - rot) % kh, c].tolist()
            rec.append(int(bias[c]))
            if rqc.get("fast"):
                rec += rqc["frec"][3 * c:3 * c + 3] if rqc["fast_pc"] else rqc["frec"][:3]
            recs.append(rec)
    ow_even = g["ow"] + (g["ow"] & 1)
    need = ow_even + 2 if g["sw"] == 1 else 2 * ow_even + 2
    wpad = max(need, g["iw"] + g["pad_l"])
    wpad += wpad & 1
    ctx = {"g": g, "mult": a["depth_multiplier"], "wp": wpad, "rec_words": [v for r in recs for v in r],
           "rw": len(recs[0]), "rots": rots,
           "ext": _ext(x.dtype), "offset_word": _offset_word(x.zero_point), "zp": x.zero_point,
           "scratch_bytes": 2 * kh * g["ic"] * wpad, "uses_bias": False,
           "summary": f"kh x 3 stride {g['sw']}: input rows transposed to int16 (x - zp), two outputs per channel "
                      "and SMLAD step, per-channel records of weight pairs, bias and requantization"}
    ctx.update(rqc)
    ctx.update(_residual_ctx(node, graph))
    # the channel loop in assembly: 3 kernel rows, one output per input channel, the SMLAL epilogue
    # with SSAT/USAT, byte or halfword outputs
    y = graph.tensors[node.outputs[0]]
    if kh == 3 and a["depth_multiplier"] == 1 and not a.get("residual") and rqc.get("fast") \
            and y.dtype in ("int8", "uint8", "int16", "uint16") and 2 * kh * wpad + 8 < 4096 \
            and g["oc"] * y.itemsize < 4096:  # LDR/STR immediate offsets of the assembly loop (imm12)
        info = np.iinfo(y.dtype)
        lo = rq.lo if rq.lo > info.min else None     # bounds tighter than the storage type (a fused ReLU)
        hi = rq.hi if rq.hi < info.max else None
        if all(v is None or -255 <= v <= 255 for v in (lo, hi)):
            ctx["asm"] = {"sat": "ssat" if info.min < 0 else "usat", "bits": 8 * y.itemsize, "lo": lo, "hi": hi,
                          "st": "strb" if y.itemsize == 1 else "strh"}
    return Selection("dw3", "ops_dsp/dw3.c.j2", ctx=ctx, weight_bytes=4 * len(ctx["rec_words"]))


def select_dense(node, graph) -> Selection:
    x = graph.tensors[node.inputs[0]]
    if _ext(x.dtype) is None:
        return Selection("reference", reason=f"{x.dtype} input")
    w = graph.constants[node.inputs[1]].astype(np.int64)          # (n_out, n_in)
    n_out, n_in = w.shape
    quads, tail = divmod(n_in, 4)
    rows_pad = -(-n_out // DENSE_ROWS) * DENSE_ROWS
    wpad = np.zeros((rows_pad, n_in), np.int64)
    wpad[:n_out] = w
    blocks = wpad.reshape(rows_pad // DENSE_ROWS, DENSE_ROWS, n_in)
    # per block, per k-quad: (w[r][4q], w[r][4q+2]) for r = 0..3, then (w[r][4q+1], w[r][4q+3])
    body = blocks[:, :, :4 * quads].reshape(rows_pad // DENSE_ROWS, DENSE_ROWS, quads, 4)
    wa = pair_words(body[..., 0], body[..., 2])                    # (blocks, rows, quads)
    wb = pair_words(body[..., 1], body[..., 3])
    stream = np.stack([wa, wb], axis=2).transpose(0, 3, 2, 1).reshape(-1)   # block, quad, (a|b), row
    tail_w = blocks[:, :, 4 * quads:].transpose(0, 2, 1).reshape(-1)       # block, k, row
    rq = node.attrs.get("requant")
    ctx = {"n_in": n_in, "n_out": n_out, "rows_pad": rows_pad, "quads": quads, "tail": tail,
           "unroll": DENSE_UNROLL, "loops": quads // DENSE_UNROLL, "rem": quads % DENSE_UNROLL,
           "ext": "sxtb16" if x.dtype == "int8" else "uxtb16",
           "w_words": stream.tolist(), "tail_w": tail_w.tolist(),
           "summary": f"{DENSE_ROWS} rows per block, int16 weights, SMLAD"}
    ctx.update(_requant_ctx(rq, rows_pad))
    return Selection("dense", "ops_dsp/dense.c.j2", ctx=ctx, weight_bytes=4 * stream.size + 2 * tail_w.size)


def select(node, graph, plan, features, kernels: str) -> Selection:
    """The kernel for one node (see the module docstring)."""
    if kernels == "reference":
        return Selection("reference", reason="--kernels reference")
    if "dsp" not in features:
        return Selection("reference", reason="core without the DSP extension")
    if "mve" in features and node.op in ("conv2d", "dense"):
        from .mve import select_mve  # Helium first; depthwise and what it cannot take fall through
        s = select_mve(node, graph, plan)
        if s is not None:
            return s
    if node.op == "conv2d":
        if node.attrs["depthwise"]:
            return select_dw(node, graph, plan)
        return select_conv_gemm(node, graph)
    if node.op == "dense":
        return select_dense(node, graph)
    return Selection("reference")


def arena_gap(plan, node_index: int, size: int) -> int | None:
    """Offset of ``size`` free arena bytes while node ``node_index`` runs (no live tensor
    there), or None. Kernels put their scratch buffers there instead of on the stack."""
    if size <= 0:
        return None
    busy = sorted((p.offset, p.offset + p.size) for p in plan.placements.values()
                  if p.buffer == "arena" and p.first <= node_index <= p.last)
    pos = 0
    for lo, hi in busy:
        if lo - pos >= size:
            return pos
        pos = max(pos, (hi + 3) // 4 * 4)
    if plan.arena_bytes - pos >= size:
        return pos
    return None
