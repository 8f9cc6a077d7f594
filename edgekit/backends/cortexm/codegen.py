"""Render model.c / model.h / ek_contract.h for an IR graph from the Jinja templates."""
from __future__ import annotations

import shutil
from pathlib import Path

import jinja2
import numpy as np

from ...version import __version__
from ...ir.graph import Graph
from ...ir.packing import pack, packed_bits
from ...ir.planner import MemoryPlan
from ...ir.operators import get_op
from ...resources import resource_dir
from .kernels import registry as kernel_registry
from .kernels.base import DEFAULT_OPTIMIZE, Selection
from .sharing import share_identical_layers

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t"}


def c_int(v: int) -> str:
    """An int literal that is valid C for every int32 value (INT32_MIN has no literal)."""
    v = int(v)
    return "(-2147483647 - 1)" if v == -(2**31) else str(v)


def c_array(values, per_line: int = 16) -> str:
    flat = [c_int(v) for v in np.ravel(values)]
    width = max((len(s) for s in flat), default=1)
    lines = [", ".join(s.rjust(width) for s in flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    return ",\n".join("    " + line for line in lines)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates") / "cortexm")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cint"] = c_int
    env.filters["c_array"] = c_array
    return env


def _symbol(name: str) -> str:
    s = "".join(ch if ch.isalnum() else "_" for ch in name)
    return ("t_" + s) if s[0].isdigit() else s


def _pointer(graph: Graph, plan: MemoryPlan, tensor: str, writable: bool) -> str:
    p = plan.placements[tensor]
    ctype = C_TYPES[graph.tensors[tensor].dtype]
    if p.buffer == "input":
        return "input"
    if p.buffer == "output":
        return "output"
    qual = "" if writable else "const "
    return f"({qual}{ctype} *)(EK_ARENA + {p.offset})"


def _overlaps(plan: MemoryPlan, a: str, b: str) -> bool:
    pa, pb = plan.placements[a], plan.placements[b]
    if pa.buffer != pb.buffer:
        return False
    if pa.buffer != "arena":
        return True
    return pa.offset < pb.offset + pb.size and pb.offset < pa.offset + pa.size


def generate_c(graph: Graph, plan: MemoryPlan, out_dir: Path, *, kernels: str = "reference",
               features=(), board=None, optimize: str = DEFAULT_OPTIMIZE, widen_allowance: int | None = None,
               compact_records: bool | None = None, lean: bool = False) -> dict:
    """Write the C sources into ``out_dir``; returns figures for the build report.

    ``kernels="optimized"`` with a core whose ``features`` include "dsp" gives the layers that
    fit an optimized kernel variant (``kernels/``, chosen by ``kernels.registry``) that kernel,
    under ``#if EK_USE_DSP`` with the reference kernel in the ``#else`` branch (host build,
    other cores). ``board`` bounds the flash of their int16 weights and their stack scratch.
    ``optimize`` (size, balanced, speed) decides between the variants that keep weights at int8
    and those that widen them to int16 (docs/kernels.md); ``widen_allowance`` bounds the extra flash
    bytes balanced may spend on int16 weights (None: ``BALANCED_EXTRA_FLASH`` of the parameters);
    ``compact_records``: compact requantization records where a variant offers them (None: under size);
    ``lean`` (balanced, for the default flash goal when compact records alone miss it): the layouts with the
    fewest flash bytes, shape-generic depthwise code included (:func:`_compact_for_flash_goal`).
    """
    env = environment()
    symbols = {name: "ek_" + _symbol(name) for name in graph.constants}
    # 2- and 4-bit weights of dense/conv layers are packed in flash and unpacked in the kernel.
    wbits = {n.inputs[1]: packed_bits(graph.tensors[n.inputs[1]].bits) for n in graph.nodes
             if get_op(n.op, n.name).packs_weights}
    selections = _select_kernels(graph, plan, kernels, features, board, optimize, widen_allowance, compact_records,
                                 lean)
    dsp_only = set()  # weights that only optimized kernels consume (they carry their own layout); biases are shared
    unused = set()  # weights that only portable kernels consume: no reference kernel reads them anywhere
    for name in graph.constants:
        users = [n for n in graph.nodes if name in n.inputs]
        if users and all(selections[n.name].optimized and (n.inputs[1] == name or (
                n.inputs[2] == name and not selections[n.name].ctx.get("uses_bias", True))) for n in users):
            dsp_only.add(name)
            if all(selections[n.name].portable for n in users):
                unused.add(name)
    constants = []
    for name, arr in graph.constants.items():
        if name in unused:
            continue
        t = graph.tensors[name]
        bits = wbits.get(name, 8)
        if bits < 8:
            body, ctype, count = c_array(pack(arr, bits)), "uint8_t", -(-arr.size * bits // 8)
        else:
            body, ctype, count = c_array(arr), C_TYPES[t.dtype], arr.size
        constants.append({
            "sym": symbols[name], "ctype": ctype, "count": count, "body": body, "reference_only": name in dsp_only,
            "comment": f"{name}: {list(arr.shape)} {t.bits}-bit codes"
                       + (f", packed {8 // bits} per byte" if bits < 8 else f" as {t.dtype}"),
        })
    layers, total_macs, calls = [], 0, {}
    for i, node in enumerate(graph.nodes):
        op = get_op(node.op, node.name)
        if op.alias:
            continue
        fn = f"ek_layer{i}_{_symbol(node.name)}"
        acts = [t for t in node.inputs if not graph.tensors[t].const]
        consts = [symbols[t] for t in node.inputs if graph.tensors[t].const]
        y = node.outputs[0]
        macs = op.macs(node, graph)
        total_macs += macs
        aliased = any(_overlaps(plan, t, y) for t in acts)  # the output goes (partly) over an input
        # restrict only on a parameter whose bytes overlap no other parameter's: two restrict
        # parameters at the same address (an in-place layer, or one tensor passed twice) are UB
        operands = acts + [y]
        sel = selections[node.name]
        ptrs = ["*" if any(_overlaps(plan, t, u) for j, u in enumerate(operands) if j != i) else "*restrict "
                for i, t in enumerate(operands)]
        if sel.optimized and sel.ctx.get("scratch_in_place"):
            ptrs[0] = "*"  # the kernel's scratch goes over its input's bytes (ir/planner.py scratch_over_input)
        in_names = ["in"] + [f"in{k}" for k in range(1, len(acts))]
        params = [f"const {C_TYPES[graph.tensors[t].dtype]} {ptr}{n}" for t, ptr, n in zip(acts, ptrs, in_names)]
        params.append(f"{C_TYPES[graph.tensors[y].dtype]} {ptrs[-1]}out")
        fusion = plan.fusion_of(node.name)
        rows = None
        if fusion is not None:  # row-fused: the layer computes a range of output pixels per call
            params.append("int32_t p_begin, int32_t p_end")
            rows = {"ring_out": fusion.ring_pixels if fusion.producer == node.name else 0,
                    "ring_in": fusion.ring_rows if fusion.consumer == node.name else 0}
        ctx = {
            "node": node, "fn": fn, "ctx": op.c_context(node, graph), "macs": macs,
            "params": ", ".join(params),
            "in_t": C_TYPES[graph.tensors[acts[0]].dtype], "out_t": C_TYPES[graph.tensors[y].dtype],
            "res_t": C_TYPES[graph.tensors[acts[1]].dtype] if len(acts) > 1 else "",
            "weights": consts[0] if consts else "", "bias": consts[1] if len(consts) > 1 else "",
            "table": consts[0] if consts else "",
            "wbits": wbits.get(node.inputs[1], 8) if len(node.inputs) > 1 else 8,
            "inplace": aliased, "rows": rows,
        }
        code = env.get_template(f"ops/{op.template}").render(**ctx)
        dsp_code = None
        if sel.optimized:
            d = dict(sel.ctx)
            dctx = dict(ctx["ctx"], residual=ctx["ctx"].get("residual"))
            dsp_code = env.get_template(sel.template).render(**dict(ctx, ctx=dctx, d=d, scratch=sel.scratch))
            if sel.portable:  # the layer's only kernel, on every core and the host
                code, dsp_code = dsp_code, None
        args = [_pointer(graph, plan, t, False) for t in acts] + [_pointer(graph, plan, y, True)]
        calls[node.name] = (fn, args)
        call = f"{fn}({', '.join(args)})"
        # noinline helpers the layer's code calls (the stack analysis adds their frames): the GEMM's im2col of
        # 3 pixels at once (conv2d_gemm*.c.j2 calls it where d.im2col3 and one block per step), of 2 for
        # conv2d_gemm_2x2 (d.im2col2)
        helpers = [f"ek_im2col{2 if sel.ctx.get('im2col2') else 3}_{sel.ctx['ext']}"] if sel.optimized \
            and (sel.ctx.get("im2col3") or sel.ctx.get("im2col2")) and sel.ctx.get("nblocks", 1) == 1 \
            and sel.ctx.get("ext") else []
        helpers += list(sel.ctx.get("noinline_helpers", ())) if sel.optimized else []  # e.g. dw3_compact's body
        layers.append({"code": code, "call": call, "comment": f"{node.op} {node.name}", "dsp_code": dsp_code,
                       "kernel": sel.describe() if op.packs_weights else "", "name": node.name, "fn": fn,
                       "params": ctx["params"], "helpers": helpers})
    for k, f in enumerate(plan.fused):
        for layer in layers:
            if layer["name"] == f.producer:
                layer["call"] = _fused_call(k, f, graph, calls)
                layer["comment"] = f"{layer['comment']} row-fused with {f.consumer}"
            elif layer["name"] == f.consumer:
                layer["call"] = None  # runs inside the producer's loop

    shared = share_identical_layers(layers, {c["sym"]: c["ctype"] for c in constants})

    in_t, out_t = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    iq = graph.input_quant
    in_arena = plan.io == "arena"  # ek_model_input()/ek_model_output() point into the arena
    common = {
        "version": __version__,
        "source_name": Path(graph.meta.get("source", "model.onnx")).name,
        "arena_bytes": plan.arena_bytes, "io_in_arena": in_arena,
        "input": {"float_shape": list(iq.float_shape), "count": in_t.size, "ctype": C_TYPES[in_t.dtype],
                  "bytes": in_t.nbytes, "offset": plan.placements[graph.inputs[0]].offset if in_arena else None,
                  "scale": repr(float(iq.scale)), "zero_point": iq.zero_point, "qmin": iq.qmin, "qmax": iq.qmax,
                  "rounding": iq.rounding},
        "output": {"shape": list(out_t.shape), "count": out_t.size, "ctype": C_TYPES[out_t.dtype],
                   "bytes": out_t.nbytes, "offset": plan.placements[graph.outputs[0]].offset if in_arena else None,
                   "scale": repr(float(out_t.scale[0])), "zero_point": out_t.zero_point},
    }
    const_bytes = int(sum(-(-a.size * wbits.get(n, 8) // 8) * (a.itemsize if wbits.get(n, 8) == 8 else 1)
                          for n, a in graph.constants.items() if n not in unused)
                      + sum(s.weight_bytes for s in selections.values() if s.portable))
    (out_dir / "model.h").write_text(env.get_template("model.h.j2").render(**common))
    any_dsp = any(s.optimized for s in selections.values())
    any_mve = any(s.template and s.template.startswith("ops_mve/") for s in selections.values())
    dsp_common = env.get_template("ops_dsp/dsp_common.c.j2").render(mve=any_mve) if any_dsp else ""
    if any_mve:  # Helium kernels: the helpers they share
        dsp_common += "\n" + env.get_template("ops_mve/mve_common.c.j2").render()
    (out_dir / "model.c").write_text(env.get_template("model.c.j2").render(
        constants=constants, layers=layers, total_macs=total_macs, const_bytes=const_bytes, dsp_common=dsp_common,
        **common))
    shutil.copyfile(resource_dir("templates") / "cortexm" / "ek_contract.h", out_dir / "ek_contract.h")
    return {"macs": total_macs, "weight_bytes": const_bytes, "arena_bytes": plan.arena_bytes,
            "kernels": {n.name: selections[n.name].describe() + _sharing_note(n.name, shared) for n in graph.nodes
                        if get_op(n.op, n.name).packs_weights},
            "kernel_variants": {n.name: selections[n.name].kind for n in graph.nodes},
            "kernel_choices": {n.name: note for n in graph.nodes if (note := optimize_choice(selections[n.name]))},
            "kernel_fallbacks": kernel_fallbacks(graph, selections), "shared_code": shared,
            "layer_helpers": {layer["fn"]: layer["helpers"] for layer in layers if layer["helpers"]},
            "shared_wrappers": {layer["fn"]: sorted(k for k, (_, m) in shared.items() if layer["name"] in m)
                                for layer in layers if any(layer["name"] in m for _, m in shared.values())},
            "optimized_weight_bytes": sum(s.weight_bytes for s in selections.values() if s.optimized),
            "balanced_widened_bytes": sum(s.ctx.get("balanced_extra", 0) for s in selections.values()
                                          if s.optimized),
            "balanced_smallest_left": min((s.ctx["balanced_needs"] for s in selections.values()
                                           if s.optimized and "balanced_needs" in s.ctx), default=None)}


def _sharing_note(layer: str, shared: dict[str, tuple[str, list[str]]]) -> str:
    """`` (code shared with ...)`` for a layer whose function on the build's core runs shared code
    (sharing.py: its optimized code, or its only code), else ""."""
    for name, (branch, members) in shared.items():
        if branch != "ref" and layer in members:
            others = [m for m in members if m != layer]
            return f" (code shared with {', '.join(others)}: {name})"
    return ""


def _fused_call(k: int, f, graph: Graph, calls: dict) -> str:
    """The C loop of row fusion ``f`` (ir/planner.py RowFusion): per step, the producer's next
    output pixels, then the consumer's step of output pixels."""
    nodes = {n.name: n for n in graph.nodes}
    shape = graph.tensors[nodes[f.consumer].outputs[0]].shape
    npb = int(shape[0] * shape[1])
    fa, args_a = calls[f.producer]
    fb, args_b = calls[f.consumer]
    ctype = "uint16_t" if max(f.a_end) < 2**16 else "uint32_t"
    table = ", ".join(str(v) for v in f.a_end)
    ind = "    "
    return "\n".join([
        f"{{ /* {f.producer}'s output in a ring of {f.ring_rows} rows ({f.ring_bytes} B), {f.consumer} "
        f"{f.step} pixels per step */",
        f"{ind * 2}static const {ctype} a_end[{len(f.a_end)}] = {{{table}}};",
        f"{ind * 2}int32_t a_done = 0;",
        f"{ind * 2}for (int32_t s = 0; s < {len(f.a_end)}; ++s) {{",
        f"{ind * 3}const int32_t q0 = s * {f.step};",
        f"{ind * 3}if ((int32_t)a_end[s] > a_done) {{",
        f"{ind * 4}{fa}({', '.join(args_a)}, a_done, (int32_t)a_end[s]);",
        f"{ind * 4}a_done = (int32_t)a_end[s];",
        f"{ind * 3}}}",
        f"{ind * 3}{fb}({', '.join(args_b)}, q0, q0 + {f.step} < {npb} ? q0 + {f.step} : {npb});",
        f"{ind * 2}}}",
        f"{ind}}}",
    ])


def optimize_choice(s: Selection) -> str | None:
    """What ``--optimize`` decided for one layer's weights, in a few words (the report's kernel
    column): narrowed to int8 for the board's flash, widened to int16 by balanced, or kept at int8
    by balanced for the flash goal; None where the objective alone decided."""
    if not s.optimized:
        return None
    if "fallback" in s.ctx:
        return s.ctx["fallback"]
    if "balanced_extra" in s.ctx:
        return f"int16 weights: +{s.ctx['balanced_extra']} B of flash for speed"
    # int8 weights in flash widened per call into free arena bytes (kernels/conv2d_gemm_widen.py)
    widen = s.ctx.get("widen") or {}
    ram = f"widened per call in {widen['bytes']} B of free arena" if "bytes" in widen else ""
    if "balanced_needs" in s.ctx:
        return (f"int8 weights: int16 (+{s.ctx['balanced_needs']} B) would exceed the default flash goal"
                + (f"; {ram}" if ram else ""))
    return f"int8 weights {ram}" if ram else None


def kernel_fallbacks(graph: Graph, selections: dict) -> list[dict]:
    """The layers that run a slower kernel than the one written for them, and why (no silent
    degradation, issue 16): an optimized variant claimed the layer on this core but refused it, or its
    scratch fit neither the arena nor the stack, or the board's flash narrowed its weights to int8, or a
    faster variant refused it with a ``kernels.base.Fallback`` (a packed 4-/2-bit variant, for any reason;
    dense_asm_int8's accumulator bound; the registry's ``ctx["fallback"]``), or the speed dense kernel reads
    its input per block for lack of stack. Nodes no variant claims, ``--kernels reference``, cores without the
    features and variants that only ever use free RAM (dw3_int8_ram, mve_dwc: without a free gap the layer
    keeps its lean kernel) are not fallbacks."""
    out = []
    for n in graph.nodes:
        s = selections[n.name]
        if s.optimized:
            why = s.ctx.get("fallback")
        else:
            why = s.reason if s.reason and s.reason != "--kernels reference" and not s.reason.startswith(
                "core without") else None
        if why:
            out.append({"layer": n.name, "kernel": s.kind, "reason": why})
    return out


def fusion_refusals(graph: Graph, plan: MemoryPlan, *, kernels: str = "reference", features=(), board=None,
                    optimize: str = DEFAULT_OPTIMIZE, widen_allowance: int | None = None) -> set[str]:
    """The row-fused nodes of ``plan`` whose selected kernel cannot compute a range of output pixels
    over rings of rows (``KernelVariant.row_ranges``, or the selection's ``ctx["row_ranges"]`` where the
    geometry decides): the build plans again without their fusions."""
    reg = kernel_registry.registry()
    sel = _select_kernels(graph, plan, kernels, features, board, optimize, widen_allowance)
    names = {n for f in plan.fused for n in (f.producer, f.consumer)}
    return {n for n in names if sel[n].optimized and not sel[n].ctx.get("row_ranges", reg.get(sel[n].kind).row_ranges)}


def scratch_requests(graph: Graph, plan: MemoryPlan, *, kernels: str = "reference", features=(), board=None,
                     optimize: str = DEFAULT_OPTIMIZE) -> dict[str, int]:
    """node name -> scratch bytes of the layers whose optimized kernel falls back to the reference only
    because its scratch fits neither a free arena gap nor the stack: the build plans again with those
    bytes reserved in the arena (``plan_memory(scratch=...)``)."""
    reg = kernel_registry.registry()
    sel = _select_kernels(graph, plan, kernels, features, board, optimize)
    out = {}
    for node in graph.nodes:
        if not sel[node.name].optimized and (sel[node.name].reason or "").startswith("scratch of"):
            need = reg.select(node, graph, plan, features, kernels, optimize).ctx.get("scratch_bytes", 0)
            if need:
                out[node.name] = need
    return out


def scratch_over_input_requests(graph: Graph, plan: MemoryPlan, *, kernels: str = "reference", features=(),
                                board=None, optimize: str = DEFAULT_OPTIMIZE) -> dict[str, tuple[int, int]]:
    """node name -> (scratch bytes, the stack bytes they add to the inference's stack otherwise) of the layers
    whose kernel could write its scratch over its dying input in the arena (``ctx["scratch_over_input"]``: the
    speed dense kernel's widened input) instead of on the stack, or instead of reading its input per block for
    lack of stack. The build plans each with it and keeps it where the arena grows by no more than the stack
    would (what a layer's scratch adds to the stack: its bytes beyond the largest other stack scratch)."""
    sel = _select_kernels(graph, plan, kernels, features, board, optimize)
    on_stack = {n: s.ctx.get("scratch_bytes", 0) for n, s in sel.items() if s.optimized and s.scratch is None}
    out = {}
    for n, s in sel.items():
        need = s.ctx.get("scratch_over_input", 0) if s.optimized else 0
        if need:
            others = max((b for m, b in on_stack.items() if m != n), default=0)
            out[n] = (need, max(0, need - others))
    return out


def _place_scratch(s: Selection, plan: MemoryPlan, index: int, board) -> Selection:
    """``s`` with its scratch buffer in a free arena gap or on the stack; the reference kernel
    when it fits neither."""
    need = s.ctx.get("scratch_bytes", 0) if s.optimized else 0
    if need:
        s.scratch = kernel_registry.arena_gap(plan, index, need)
        stack_limit = min(kernel_registry.STACK_SCRATCH_LIMIT,
                          (board.stack_bytes // 2) if board else kernel_registry.STACK_SCRATCH_LIMIT)
        if s.scratch is None and need > stack_limit:
            return Selection("reference", reason=f"scratch of {need} B fits neither a free arena gap nor "
                                                 f"the stack budget ({stack_limit} B)")
    return s


def _widen_within_allowance(graph: Graph, plan: MemoryPlan, sel: dict, features, kernels: str, board,
                            allowance: int | None = None) -> None:
    """--optimize balanced: give int16 weights to the int8-weight layers that save the most
    instructions per extra flash byte, while the extra bytes stay within ``allowance``: what the
    default flash goal leaves (kernels/registry.py flash_goal_bytes; build.py measures the firmware
    and sets it), by default ``BALANCED_EXTRA_FLASH`` of the model's int8 parameter bytes. Each
    layer's summary says what it got and why."""
    reg = kernel_registry.registry()
    cap = int(kernel_registry.BALANCED_EXTRA_FLASH * sum(a.nbytes for a in graph.constants.values()))
    allowance = cap if allowance is None else allowance
    candidates = []
    for i, node in enumerate(graph.nodes):
        s = sel[node.name]
        saved = reg.get(s.kind).instructions_saved_by_int16(s) if s.optimized else 0
        if saved <= 0:
            continue
        if len(node.inputs) > 1 and node.inputs[1] in graph.constants and graph.tensors[node.inputs[1]].bits < 8:
            # weights quantized below 8 bits stay packed: the user chose them for their flash (mixed precision)
            continue
        wide = _place_scratch(reg.select(node, graph, plan, features, kernels, "speed"), plan, i, board)
        if not wide.optimized or wide.kind == s.kind:
            continue
        extra = max(1, wide.weight_bytes - s.weight_bytes)  # the int16 stream replaces the int8 one
        candidates.append((-saved / extra, node.name, wide, extra))
    used = 0
    for _, name, wide, extra in sorted(candidates, key=lambda c: (c[0], c[1])):
        if used + extra <= allowance:
            wide.ctx["summary"] = f"{wide.ctx.get('summary', '')} (balanced: {extra} B of flash for speed)"
            wide.ctx["balanced_extra"] = extra
            sel[name] = wide
            used += extra
        else:
            s = sel[name]
            limit = (f"the default flash goal ({kernel_registry.flash_goal_bytes(graph)} B) leaves {allowance - used} B"
                     if allowance != cap else f"{allowance - used} B left of the balanced allowance ({cap} B)")
            s.ctx["summary"] = f"{s.ctx.get('summary', '')} (balanced: int8 weights: int16 needs {extra} B more; {limit})"
            s.ctx["balanced_needs"] = extra


def _narrow_cheapest_first(graph: Graph, plan: MemoryPlan, sel: dict, features, kernels: str, board, budget: int,
                           why: str) -> None:
    """Over the board's flash budget: give int8 weights first to the layers that lose the fewest
    instructions per flash byte freed (``instructions_saved_by_int16`` of the int8 variant; dw3's
    int16 records lose none against dw3_int8), until the optimized layers fit. Narrowing the
    largest layers first instead cost VWW on the 512 KiB nucleo-l552ze-q under --optimize speed
    six pointwise layers' int16 weights while dw3 records kept 92 B per channel for nothing."""
    reg = kernel_registry.registry()
    nodes = {n.name: n for n in graph.nodes}
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    total = sum(reg.get(s.kind).flash_bytes(s, nodes[n], graph) for n, s in sel.items() if s.optimized)
    candidates = []
    for n, s in sel.items():
        if total <= budget or not s.optimized:
            continue
        alt = _place_scratch(reg.select(nodes[n], graph, plan, features, kernels, "size"), plan, index[n], board)
        if not alt.optimized or alt.kind == s.kind:
            continue
        freed = reg.get(s.kind).flash_bytes(s, nodes[n], graph) - reg.get(alt.kind).flash_bytes(alt, nodes[n], graph)
        if freed > 0:
            candidates.append((reg.get(alt.kind).instructions_saved_by_int16(alt) / freed, n, alt, freed))
    for _, n, alt, freed in sorted(candidates, key=lambda c: (c[0], c[1])):
        if total <= budget:
            break
        alt.ctx["summary"] = f"{alt.ctx.get('summary', '')} ({why})"
        alt.ctx["fallback"] = f"int8 weights: {why}"
        sel[n] = alt
        total -= freed


def _select_kernels(graph: Graph, plan: MemoryPlan, kernels: str, features, board,
                    optimize: str = DEFAULT_OPTIMIZE, widen_allowance: int | None = None,
                    compact_records: bool | None = None, lean: bool = False) -> dict:
    """node name -> kernels.base.Selection; optimized kernels only where their weights fit the
    board's flash budget and their scratch fits the arena's free bytes or the stack. A layer
    whose int16 weights (``--optimize speed``) do not fit gets the int8-weight variant first."""
    reg = kernel_registry.registry()
    sel = {}
    for i, node in enumerate(graph.nodes):
        sel[node.name] = _place_scratch(reg.select(node, graph, plan, features, kernels, optimize), plan, i, board)
    if optimize == "balanced":
        _widen_within_allowance(graph, plan, sel, features, kernels, board, widen_allowance)
    if board is not None:
        # the region that holds the weights: flash, or RAM for boards loaded into RAM
        region = board.ram if getattr(board, "load", "flash") == "ram" else board.flash
        # bit-packed weights (binary kernels) replace the layer's int8 codes in the firmware
        packed = {n.inputs[1] for n in graph.nodes
                  if sel[n.name].optimized and getattr(reg.get(sel[n.name].kind), "bit_packed", False)}
        int8_bytes = sum(a.nbytes for name, a in graph.constants.items() if name not in packed)
        budget = min(int(kernel_registry.FLASH_SHARE * region.length),
                     region.length - int8_bytes - kernel_registry.FLASH_MARGIN)
        nodes = {n.name: n for n in graph.nodes}
        index = {n.name: i for i, n in enumerate(graph.nodes)}
        why = (f"int16 weights would take more than {kernel_registry.FLASH_SHARE:.0%} of the board's flash "
               "(or leave too little for the rest)")
        _narrow_cheapest_first(graph, plan, sel, features, kernels, board, budget, why)
        opt = sorted((reg.get(s.kind).flash_bytes(s, nodes[n], graph), n) for n, s in sel.items() if s.optimized)
        while opt and sum(b for b, _ in opt) > budget:
            b, n = opt.pop()  # largest first: to the int8-weight variant, else back to the reference kernel
            alt = _place_scratch(reg.select(nodes[n], graph, plan, features, kernels, "size"), plan, index[n],
                                 board)
            if alt.kind != sel[n].kind:  # the int8-weight variant of the layer (GEMM, dense, depthwise kh x 3)
                alt_bytes = reg.get(alt.kind).flash_bytes(alt, nodes[n], graph) if alt.optimized else None
                if alt_bytes is not None and alt_bytes < b:
                    alt.ctx["summary"] = f"{alt.ctx.get('summary', '')} ({why})"
                    alt.ctx["fallback"] = f"int8 weights: {why}"
                    sel[n] = alt
                    opt.append((alt_bytes, n))
                    opt.sort()
                    continue
            sel[n] = Selection("reference", reason=why)
    if optimize == "speed":  # more code for fewer instructions, within a share of the board's flash
        for v in sorted({reg.get(s.kind) for s in sel.values() if s.optimized}, key=lambda v: v.name):
            if hasattr(v, "speed_pass"):
                v.speed_pass([s for s in sel.values() if s.kind == v.name], board)
    if optimize == "size" if compact_records is None else compact_records:
        for s in sel.values():  # fewer flash bytes per channel for about half an instruction per output
            compact = getattr(reg.get(s.kind), "compact_records", None) if s.optimized else None
            if compact is not None:
                compact(s)
    if lean and optimize in ("balanced", "size"):
        _compact_for_flash_goal(graph, plan, sel, features, kernels, optimize)
    from .kernels.conv2d_gemm_widen import persist_in_row_fusions
    persist_in_row_fusions(plan, sel)  # int8 weights widened in RAM once per row fusion where nothing overwrites them
    return sel


#: the variant the default flash goal switches depthwise layers to (kernels/dw3_compact.py)
COMPACT_DW = "dw3_compact"
#: the int8 GEMM the default flash goal gives layers of conv2d_gemm_int8_shared (whose records stay at 12 bytes
#: per channel and whose code is specialised per layer) and whose compact records it takes for rows of any length
COMPACT_GEMM = "conv2d_gemm_int8"
COMPACT_GEMM_FROM = "conv2d_gemm_int8_shared"
#: the int8 GEMM widened per call in RAM (kernels/conv2d_gemm_widen.py): its flash stream is COMPACT_GEMM's, records too
COMPACT_GEMM_WIDEN = "conv2d_gemm_widen"


def _compact_for_flash_goal(graph: Graph, plan: MemoryPlan, sel: dict, features, kernels: str,
                            optimize: str = "balanced") -> None:
    """--optimize balanced (or size) narrowed for the default flash goal (build.py, where int8 weights and compact records
    alone miss it): the int8 GEMM layers take compact requantization records whatever their row length (and
    conv2d_gemm_int8_shared's layers the plain int8 GEMM, whose records can be compact); depthwise layers whose records take
    more flash than dw3_compact's 18 bytes per 3 x 3 channel (and their own code, where dw3_compact's is shared)
    switch to it. Each switched layer's summary says so."""
    reg = kernel_registry.registry()
    gemm = reg.get(COMPACT_GEMM)
    if kernels == "optimized" and gemm is not None and gemm.features <= set(features):
        for i, node in enumerate(graph.nodes):
            s = sel[node.name]
            if not s.optimized or s.kind not in (COMPACT_GEMM, COMPACT_GEMM_FROM, COMPACT_GEMM_WIDEN):
                continue
            alt = s
            if s.kind == COMPACT_GEMM_FROM:  # the shared-widening form: the plain int8 GEMM, where it takes the layer
                if gemm.refusal(node, graph, plan):
                    continue
                alt = _place_scratch(gemm.select(node, graph, plan), plan, i, None)
                if not alt.optimized:
                    continue
            # the specialised im2col of 3 pixels at once costs a call and a geometry table per layer: code the
            # lean layouts leave out (each pixel's im2col instead)
            alt.ctx["im2col3"] = False
            if not alt.ctx.get("rq_table") and gemm.compact_records(alt, min_kwords=1):
                if alt is not s:
                    alt.ctx["summary"] += f" ({optimize}: instead of {s.kind}, for the default flash goal)"
                sel[node.name] = alt
    if kernels == "optimized":  # the Helium GEMM's shift rows as bytes (mve_gemm.compact_vector_requant)
        from .kernels.mve_gemm import compact_vector_requant
        for s in sel.values():
            if s.optimized and s.ctx.get("vrq"):
                compact_vector_requant(s)
    compact = reg.get(COMPACT_DW)
    if compact is None or not compact.features <= set(features) or kernels != "optimized":
        return
    for i, node in enumerate(graph.nodes):
        s = sel[node.name]
        if not s.optimized or s.kind == COMPACT_DW or not s.kind.startswith("dw3") or not compact.claims(node):
            continue
        if compact.refusal(node, graph, plan) is not None:
            continue
        alt = _place_scratch(compact.select(node, graph, plan), plan, i, None)
        if alt.scratch is None:
            continue  # its ring of input rows found no free arena bytes (on the stack it would add to peak RAM)
        before = reg.get(s.kind).flash_bytes(s, node, graph)
        after = compact.flash_bytes(alt, node, graph)
        if after >= before:
            continue
        alt.ctx["summary"] += f" ({optimize}: {before - after} B of flash fewer than {s.kind}'s, for the default flash goal)"
        alt.ctx["replaced"] = s.kind
        sel[node.name] = alt
