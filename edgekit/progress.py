"""Progress on long work (rich): bars over loops, a spinner with elapsed time over one long step.

Shown on stderr only when both stdout and stderr are terminals and the command was not given
``--json`` (the CLI calls ``set_quiet``); ``EDGEKIT_PROGRESS=0`` turns it off, ``=1`` forces it
on (logs, tests). Nested calls (a bench's models, each verify's stages) share one live display,
since rich allows only one at a time. Finished tasks disappear; results are printed by the
command itself.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_quiet = False
_live = None  # the rich Progress being shown, shared by nested calls


def set_quiet(quiet: bool) -> None:
    """Silence progress for this process (``--json``: stdout carries one JSON document)."""
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    forced = os.environ.get("EDGEKIT_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    if _quiet:
        return False
    return sys.stderr.isatty() and sys.stdout.isatty()


@contextlib.contextmanager
def _display():
    global _live
    if _live is not None:
        yield _live
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr, force_terminal=os.environ.get("EDGEKIT_PROGRESS") == "1" or None)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # redirect_stdout=False: a command's own stdout (JSON, results) must not be routed to the bar's stderr
    with Progress(*columns, console=console, transient=True, redirect_stdout=False) as live:
        _live = live
        try:
            yield live
        finally:
            _live = None


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar ``description: done/total``; the items pass through unchanged."""
    if not enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _display() as live:
        task = live.add_task(description, total=total)
        try:
            for item in items:
                yield item
                live.advance(task)
        finally:
            live.remove_task(task)


@contextlib.contextmanager
def step(description: str):
    """One long step without a count (a compilation, an emulator run): a spinner and the time so far.
    Yields a function that replaces the description."""
    if not enabled():
        yield lambda text: None
        return
    with _display() as live:
        task = live.add_task(description, total=None)
        try:
            yield lambda text: live.update(task, description=text)
        finally:
            live.remove_task(task)
