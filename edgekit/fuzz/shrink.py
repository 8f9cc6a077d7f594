"""Shrink a failing spec: drop layers, reduce channels, sizes and kernels, simplify
quantizers, keeping each edit only while the graph still fails the same way.

Greedy: candidates are tried from the largest simplification down; the first that keeps the
failure is taken and the search starts again, until no candidate fails or the budget of
test runs is spent. Every candidate is a valid spec (shapes checked before it is run).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterator

from .runner import check_shapes

# Integer fields a layer may lose (down to 1), and quantizer fields set to their plainest value.
_SHRINK_INTS = ("out", "a", "b", "mult", "k", "ka", "kb", "stride", "dil", "pad", "groups")
_PLAIN = {"scale": "pow2", "per_channel": False, "asym": False, "signed": True, "bits": 8, "bias": True,
          "bn": False}


def _candidates(spec: dict) -> Iterator[dict]:
    layers = spec["layers"]
    for i in range(len(layers) - 1, -1, -1):  # drop a layer (and a flatten left without a consumer)
        c = copy.deepcopy(spec)
        del c["layers"][i]
        yield c
    for key in ("size",):
        for d, n in enumerate(spec[key]):
            for smaller in sorted({1, n // 2, n - 1}):
                if 1 <= smaller < n:
                    c = copy.deepcopy(spec)
                    c[key][d] = smaller
                    yield c
    for smaller in sorted({1, spec["in_ch"] // 2, spec["in_ch"] - 1}):
        if 1 <= smaller < spec["in_ch"]:
            c = copy.deepcopy(spec)
            c["in_ch"] = smaller
            for layer in c["layers"]:  # depthwise layers follow their input's channels
                if layer.get("groups") == spec["in_ch"]:
                    layer["groups"] = smaller
                    layer["out"] = layer["out"] // spec["in_ch"] * smaller
            yield c
    for i, layer in enumerate(layers):
        for f in _SHRINK_INTS:
            v = layer.get(f)
            if not isinstance(v, int) or isinstance(v, bool):
                continue
            floor = 0 if f == "pad" else 1
            for smaller in sorted({floor, v // 2, v - 1}):
                if floor <= smaller < v:
                    c = copy.deepcopy(spec)
                    c["layers"][i][f] = smaller
                    yield c
    for path, q in _quantizers(spec):
        for f, plain in _PLAIN.items():
            if f in q and q[f] != plain:
                c = copy.deepcopy(spec)
                _get(c, path)[f] = plain
                yield c


def _quantizers(spec: dict):
    """(path, dict) of every quantizer or flag-holding dict in the spec."""
    if isinstance(spec.get("input"), dict):
        yield ("input",), spec["input"]
    for i, layer in enumerate(spec["layers"]):
        yield ("layers", i), layer
        for k, v in layer.items():
            if isinstance(v, dict):
                yield ("layers", i, k), v


def _get(spec: dict, path: tuple):
    node = spec
    for p in path:
        node = node[p]
    return node


def shrink(spec: dict, still_fails: Callable[[dict], bool], budget: int = 60) -> tuple[dict, int]:
    """The smallest spec found that ``still_fails``, and how many candidates were run."""
    runs = 0
    best = spec
    progress = True
    while progress and runs < budget:
        progress = False
        for cand in _candidates(best):
            if not cand["layers"] or check_shapes(cand) is not None:
                continue
            if runs >= budget:
                break
            runs += 1
            if still_fails(cand):
                best, progress = cand, True
                break
    return best, runs

