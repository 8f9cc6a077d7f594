"""Refusal classes: which documented limit a ``build`` refusal is.

The documented limits are the rows of the tables in docs/limits.md (when that file exists)
and docs/fuzz.md whose first cell is a class name and whose second cell is a regular
expression in backticks::

    | unsupported-op | `unsupported op\\(s\\)` | ... |

A refusal that matches no row is reported as ``undocumented: <the message with names and
numbers blanked>``, so a campaign shows every refusal the docs do not list.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

UNDOCUMENTED = "undocumented: "

_ROW = re.compile(r"^\|\s*([a-z0-9][a-z0-9 :_-]*?)\s*\|\s*`([^`]+)`\s*\|")


def docs_dir() -> Path | None:
    """The checkout's docs/ folder (an installed wheel has none)."""
    cand = Path(__file__).resolve().parents[2] / "docs"
    return cand if cand.is_dir() else None


@lru_cache(maxsize=None)
def documented_limits(docs: Path | None = None) -> tuple[tuple[str, re.Pattern], ...]:
    """(class, pattern) for every limit row in docs/limits.md and docs/fuzz.md."""
    docs = docs or docs_dir()
    if docs is None:
        return ()
    rows = []
    for name in ("limits.md", "fuzz.md"):
        path = docs / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = _ROW.match(line.strip())
            if m:
                # a table cell writes "|" as "\\|" (GitHub Markdown), also inside backticks
                rows.append((m.group(1), re.compile(m.group(2).replace("\\|", "|"), re.IGNORECASE)))
    return tuple(rows)


def normalize(message: str) -> str:
    """The message without what differs between graphs: quoted names, paths and numbers."""
    text = message.splitlines()[0] if message else ""
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\S*/\S*\.(onnx|tflite)", "<model>", text)
    text = re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e[-+]?\d+)?(?![\w.])", "N", text)
    return text[:120]


def refusal_class(message: str) -> str:
    for name, pattern in documented_limits():
        if pattern.search(message):
            return name
    return UNDOCUMENTED + normalize(message)
