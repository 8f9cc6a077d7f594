"""Progress bars of the search (tqdm, on stderr): trials, a trial's training epochs, the
latency model's calibration.

Shown when :func:`edgekit.progress.enabled` says so (terminals only, not under ``--json``,
``EDGEKIT_PROGRESS=0/1``). The per-trial result lines are printed through :func:`write` so that
they do not tear a bar. tqdm rather than rich here: the trial and epoch bars stack with
``position``, which the search's workers use.
"""
from __future__ import annotations

import sys

# the switch every progress display of edgekit shares (quiet under --json, terminals only)
from ..progress import enabled


def bar(total: int | None, desc: str, unit: str = "it", position: int = 0, leave: bool = False):
    """A tqdm bar on stderr (a no-op object when progress is off)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=leave, file=sys.stderr,
                disable=not enabled(), dynamic_ncols=True, mininterval=0.5)


def write(text: str, stream=None) -> None:
    """Print a line above the bars (or plainly when there are none)."""
    stream = stream or sys.stdout
    if enabled():
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()
