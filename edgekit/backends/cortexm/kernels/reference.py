"""The reference kernels (templates/cortexm/ops/<op>.c.j2, named by each operator's spec):
portable C99, the definition of what a layer computes. Every node can take them: the
registry falls back to them (a ``Selection`` of this name with the reason) when no optimized
variant takes a node, and the code generator emits them for every node (the ``#else`` of an
optimized kernel). What this module adds is their latency-model features."""
from __future__ import annotations

import numpy as np

from ....ir.operators import get_op
from .base import KernelVariant, Selection
from .common import conv_valid_taps, valid_taps


def _layout(kernel) -> str:
    """The loop nest GCC makes of a kernel window: a row, a column or 2D."""
    kh, kw = kernel
    return "row" if kh == 1 else "col" if kw == 1 else "2d"


class Reference(KernelVariant):
    name = "reference"
    ops = ()          # every op: the registry's fallback, never asked to claim a node
    priority = 0
    cost_kinds = {
        "conv": ("macs", "taps", "kx_iters", "ky_iters", "outputs", "pixels", "const"),
        "dwconv": ("taps", "kx_iters", "ky_iters", "outputs", "pixels", "const"),
        "dense": ("macs", "outputs", "const"),
        "maxpool": ("taps", "win_iters", "ky_iters", "outputs", "pixels", "const"),
        "avgpool": ("taps", "win_iters", "ky_iters", "outputs", "pixels", "const"),
        "gap": ("taps", "ky_iters", "outputs", "const"),
        "eltwise": ("outputs", "const"),
    }
    cost_reduced = {"conv": ("macs", "taps", "outputs"), "dwconv": ("taps", "outputs"), "dense": ("macs", "outputs"),
                    "maxpool": ("taps", "outputs"), "avgpool": ("taps", "outputs"), "gap": ("taps", "outputs"),
                    "eltwise": ("outputs",)}
    cost_work = {"conv": (("macs", 1), ("taps", 1), ("outputs", 1)), "dwconv": (("taps", 1), ("outputs", 1)),
                 "dense": (("macs", 1), ("outputs", 1)), "maxpool": (("taps", 1), ("outputs", 1)),
                 "avgpool": (("taps", 1), ("outputs", 1)), "gap": (("taps", 1), ("outputs", 1)),
                 "eltwise": (("outputs", 1),)}

    def cost_features(self, info: dict) -> tuple[str, dict]:
        """Loop counts of the reference kernels; "zero" for operators that emit no code.
        Executed counts skip the taps that fall into the padding, as the kernels do."""
        op = info["op"]
        f: dict = {"const": 1}
        if op == "conv2d":
            ic = info["in"][2]
            oh, ow, oc = info["out"]
            kh, kw = info["kernel"]
            vh, vw = conv_valid_taps(info)
            f.update(taps=vh * vw * oc, kx_iters=vh * ow * kw * oc, ky_iters=oh * ow * oc * kh,
                     outputs=oh * ow * oc, pixels=oh * ow)
            if info["depthwise"]:
                return "dwconv", f
            f["macs"] = vh * vw * oc * ic
            return "conv", f
        if op == "dense":
            n_in = int(np.prod(info["in"]))
            n_out = int(np.prod(info["out"]))
            f.update(macs=n_in * n_out, outputs=n_out)
            return "dense", f
        if op in ("maxpool", "avgpool"):
            ih, iw, c = info["in"]
            oh, ow, _ = info["out"]
            kh, kw = info["kernel"]
            sh, sw = info["stride"]
            pad = info.get("pad", (0, 0, 0, 0))
            vh = valid_taps(oh, ih, kh, sh, pad[0])
            vw = valid_taps(ow, iw, kw, sw, pad[1])
            f.update(taps=vh * vw * c, win_iters=oh * ow * c * kh * kw, ky_iters=oh * ow * c * kh,
                     outputs=oh * ow * c, pixels=oh * ow)
            if op == "avgpool" and oh == ow == 1:
                return "gap", f
            return op, f
        if get_op(op, info["name"]).alias:
            return "zero", {}
        f.update(outputs=int(np.prod(info["out"])))
        return "eltwise", f

    def cost_refinements(self, kind: str, info: dict) -> list[str]:
        parts = []
        if kind in ("conv", "dwconv"):
            parts.append(_layout(info["kernel"]))
        if "wbits" in info and kind in ("conv", "dwconv", "dense"):  # sub-byte weights are unpacked in the loop
            parts.append(f"w{info['wbits']}")
        if kind in ("maxpool", "avgpool"):
            parts.append("k{}x{}".format(*info["kernel"]))
        if kind == "gap":
            parts.append(_layout(info["kernel"]))
        if kind in ("avgpool", "gap") and info.get("den") is not None:  # the division the average ends with
            den = int(info["den"])
            parts.append("d1" if den == 1 else "p2" if den & (den - 1) == 0 else "div")
        return parts


VARIANTS = (Reference(),)
