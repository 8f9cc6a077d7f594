"""Progress bars of the search (tqdm, on stderr): trials, a trial's training epochs, the
latency model's calibration.

Shown only when stdout and stderr are both terminals and the command was not asked to be
quiet (``set_quiet``, e.g. for ``--json``); ``EDGEKIT_PROGRESS=0`` turns them off, ``=1``
forces them on. The per-trial result lines are printed through :func:`write` so that they
do not tear a bar. One function makes every bar, so switching to a shared progress module
later touches only this file.
"""
from __future__ import annotations

import os
import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    forced = os.environ.get("EDGEKIT_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return not _quiet and sys.stderr.isatty() and sys.stdout.isatty()


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
