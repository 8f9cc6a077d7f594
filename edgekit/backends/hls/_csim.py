"""Child process for the C-simulation: ``python -m edgekit.backends.hls._csim PROJECT IN.npy OUT.npy``.

hls4ml loads the compiled model into the calling process (ctypes), where an ``assert`` in
the generated C++ or a crash would take ``edgekit verify`` down with it; in a child process
it becomes an error message. Writes the outputs to OUT.npy and the compile time to stdout.
"""
from __future__ import annotations

import contextlib
import io
import sys
import time

import numpy as np


def main(project: str, inp: str, out: str) -> int:
    import hls4ml

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        hm = hls4ml.converters.link_existing_project(project)
        hm.config.config["OutputDir"] = project  # the project may have moved since it was written
        t0 = time.monotonic()
        try:
            hm.compile()
        except Exception as e:
            sys.stderr.write(log.getvalue()[-4000:])
            sys.stderr.write(f"\nEDGEKIT_CSIM_COMPILE_FAILED: {type(e).__name__}: {e}\n")
            return 3
        compile_s = time.monotonic() - t0
        y = hm.predict(np.load(inp))
    np.save(out, np.asarray(y, np.float64))
    print(f"EDGEKIT_CSIM_COMPILE_SECONDS={compile_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
