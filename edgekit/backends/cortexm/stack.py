"""Static stack analysis of the generated model from GCC's -fstack-usage output.

``ek_model_run`` calls each layer function in turn and layers call nothing (their
helpers are static inline) but the function whose code they share (``ek_shared<K>``,
sharing.py) and the GEMM's noinline im2col helper (``ek_im2col3_*``, one copy per firmware), so the deepest inference stack is ek_model_run's frame plus the largest layer
frame, a sharing layer's frame counting the frame of the shared function it calls. The firmware's painted-stack measurement checks it.
"""
from __future__ import annotations

from pathlib import Path

from .sharing import SHARED_PREFIX


def frames(su_file: Path) -> dict[str, tuple[int, str]]:
    """function -> (bytes, qualifier) from a GCC .su file."""
    out = {}
    for line in su_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out[parts[0].rsplit(":", 1)[-1]] = (int(parts[1]), parts[2])
    return out


def inference_stack_bytes(su_file: Path, wrappers: dict | None = None, helpers: dict | None = None) -> int | None:
    """Predicted stack depth of one ek_model_run call, or None if it cannot be bounded;
    ``wrappers``: layer function -> the ek_shared<K> functions it may call (codegen's shared_wrappers);
    ``helpers``: layer function -> the noinline helpers its code calls, itself or through the shared
    function (codegen's layer_helpers, e.g. ek_im2col3_*)."""
    if not su_file.is_file():
        return None
    f = frames(su_file)
    if "ek_model_run" not in f or any(q.startswith("dynamic") and not q.endswith("bounded")
                                      for name, (_, q) in f.items() if name.startswith("ek_")):
        return None
    wrappers, helpers = wrappers or {}, helpers or {}

    def helper_frame(name: str) -> int:
        # GCC may emit the helper as a specialised clone (ek_im2col3_sxtb16.constprop, .isra, .part)
        wanted = set(helpers.get(name, ()))
        return max((b for fn, (b, _) in f.items() if fn.split(".", 1)[0] in wanted), default=0)

    layers = [b + helper_frame(name) for name, (b, _) in f.items()
              if name.startswith("ek_layer") and name not in wrappers]
    # a layer that shares its code (sharing.py) adds the frame of the ek_shared<K> it calls to its own
    calls = [f[w][0] + max((f[k][0] for k in ks if k in f), default=0) + helper_frame(w)
             for w, ks in wrappers.items() if w in f]
    return f["ek_model_run"][0] + max(layers + calls, default=0)
