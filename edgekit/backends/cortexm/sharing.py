"""One C function for layers whose generated code is identical but for the constant arrays it names.

Every template renders a layer as its own ``EK_LAYER void ek_layer<N>_<name>(params)``, specialised
on shapes, zero points and strides, and names its constants directly: arrays it defines itself
(``ek_layer<N>_<name>_w``, ``..._rq``, ...) and the model's constants (``ek_<tensor>``). Layers of one
shape (MobileNet's repeated 128-channel blocks, DS-CNN's four depthwise-separable blocks) then
compile to the same machine code several times. :func:`share_identical_layers` finds such layers
(same text once comments, the function's name and the arrays' names are set aside), emits the code
once as ``ek_shared<K>`` taking the arrays as ``const T *restrict`` parameters, and turns every
member into a wrapper that keeps its name and passes its own arrays. The wrapper keeps
``ek_layer<N>_*`` for ``edgekit profile``, which counts the shared body for the layer whose code ran
last (the wrapper); each layer still reads only its own constants, so the integers are unchanged.

Sharing is decided per branch: the optimized code under ``#if EK_USE_DSP``, the reference code in
its ``#else`` and code compiled everywhere are grouped separately, and a shared function is defined
under the same condition as its members.
"""
from __future__ import annotations

import re

SHARED_PREFIX = "ek_shared"
#: a layer whose code carries this comment shares one body with layers whose parameters differ from its own only
#: in ``restrict`` (an in-place layer and others: shape-generic code such as dw3_compact's); the body takes none
SHARE_UNRESTRICTED = "/* ek: shares without restrict"
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


def _array_defs(text: str, fn: str) -> tuple[list[tuple[str, str, str]], str]:
    """The top-level ``static const T <fn>_x[n] = {...};`` definitions of ``text`` as (name, C type,
    definition text), and the text without them."""
    head = re.compile(rf"^static const (\w+) ({re.escape(fn)}_\w+)\[\d+\] = \{{", re.M)
    arrays, kept, pos = [], [], 0
    for m in head.finditer(text):
        if m.start() < pos:
            continue
        end = text.find("};", m.end())
        if end < 0:
            continue
        end += 2
        if end < len(text) and text[end] == "\n":
            end += 1
        start = m.start()
        lead = re.search(r"^/\*(?:(?!\*/).)*\*/\n\Z", text[pos:start], re.S | re.M)
        if lead:  # the comment that describes the array goes with it
            start = pos + lead.start()
        kept.append(text[pos:start])
        arrays.append((m.group(2), m.group(1), text[start:end]))
        pos = end
    kept.append(text[pos:])
    return arrays, "".join(kept)


def _param_names(params: str) -> list[str]:
    return [re.findall(r"\w+", p)[-1] for p in params.split(",") if p.strip()]


class _Unit:
    """One branch text of one layer, split into its arrays and the code that names them."""

    def __init__(self, text: str, fn: str, params: str, global_types: dict[str, str]):
        self.fn, self.params, self.text = fn, params, text
        self.loose = SHARE_UNRESTRICTED in text
        self.group_params = params.replace("*restrict ", "*") if self.loose else params
        self.arrays, body = _array_defs(text, fn)
        self.body = body
        signature = f"EK_LAYER void {fn}({params})"
        self.key = None
        if body.count("EK_LAYER") != 1 or signature not in body:
            return
        before = body[:body.index(signature)]
        local = {a[0]: a[1] for a in self.arrays}
        names = re.findall(r"\bek_\w+\b", body)
        refs = []
        for name in names:
            if (name in local or name in global_types) and name not in refs:
                refs.append(name)
        if any(re.search(rf"\b{re.escape(r)}\b", _COMMENT.sub("", before)) for r in refs):
            return  # an array used outside the layer function: it cannot become a parameter
        self.refs = refs
        self.types = [local.get(r) or global_types[r] for r in refs]
        norm = _COMMENT.sub("", body)
        for i, r in sorted(enumerate(refs), key=lambda ir: -len(ir[1])):
            norm = re.sub(rf"\b{re.escape(r)}\b", f"@R{i}", norm)
        norm = norm.replace(signature, f"EK_LAYER void {fn}({self.group_params})").replace(fn, "@FN")
        self.key = (norm, tuple(self.types))

    def shared_definition(self, name: str, members: list[str]) -> str:
        """The body of this unit as ``name`` taking its arrays as parameters."""
        body = self.body
        args = [f"ek_c{i}" for i in range(len(self.refs))]
        for i, r in sorted(enumerate(self.refs), key=lambda ir: -len(ir[1])):
            body = re.sub(rf"\b{re.escape(r)}\b", args[i], body)
        extra = ", ".join(f"const {t} *restrict {a}" for t, a in zip(self.types, args))
        # layers without constant arrays (two concats of one shape) share their code with no extra parameter
        params = ", ".join(p for p in (self.group_params, extra) if p)
        body = body.replace(f"EK_LAYER void {self.fn}({self.params})", f"EK_LAYER void {name}({params})")
        body = body.replace(self.fn, name)
        note = (f"/* {name}: the code of layers {', '.join(members)}, identical but for their constant arrays "
                "(passed as ek_c0...; backends/cortexm/sharing.py) */\n")
        return note + body

    def wrapper(self, name: str) -> str:
        """This layer's arrays and a function of its name that runs ``name`` on them."""
        args = ", ".join(_param_names(self.params) + self.refs)
        return "".join(a[2] for a in self.arrays) + (
            f"\nEK_LAYER void {self.fn}({self.params})\n{{\n    {name}({args}); /* shared code */\n}}\n")


def share_identical_layers(layers: list[dict], global_types: dict[str, str]) -> dict[str, tuple[str, list[str]]]:
    """Rewrite ``layers`` (codegen's dicts: ``fn``, ``params``, ``code``, ``dsp_code``) in place so
    that layers with identical code share one function; ``global_types``: the model constants' C
    symbols and element types. Returns shared function name -> (its branch: "dsp" under EK_USE_DSP,
    "ref" in its #else, "all" everywhere; the layers (names) it serves)."""
    branches = []  # (layer, field, condition)
    for layer in layers:
        if layer.get("dsp_code"):
            branches += [(layer, "dsp_code", "dsp"), (layer, "code", "ref")]
        else:
            branches.append((layer, "code", "all"))
    groups: dict[tuple, list[tuple[dict, str, _Unit]]] = {}
    for layer, field, cond in branches:
        unit = _Unit(layer[field], layer["fn"], layer["params"], global_types)
        if unit.key is not None:
            groups.setdefault((cond, unit.group_params) + unit.key, []).append((layer, field, unit))
    shared = {}
    for key, members in groups.items():
        if len(members) < 2:
            continue
        name = f"{SHARED_PREFIX}{len(shared)}"
        layer_names = list(dict.fromkeys(m[0]["name"] for m in members))
        shared[name] = (key[0], layer_names)
        first = True
        for layer, field, unit in members:
            text = unit.wrapper(name)
            if first:
                text = unit.shared_definition(name, layer_names) + text
                first = False
            layer[field] = text
    return shared
