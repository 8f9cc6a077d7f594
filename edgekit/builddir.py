"""Writing a build directory, for every backend: refuse to clobber foreign folders, write into a
temporary sibling and move it into place only when every step succeeded.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import BuildDirError
from .manifest import MANIFEST_FILE, Manifest


@dataclass
class BuildResult:
    out_dir: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)  # what the build summary should add (e.g. files it removed)


def prepare_out_dir(out_dir: Path) -> None:
    """Refuse to clobber a directory that is not an earlier edgekit build."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BuildDirError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
            raise BuildDirError(f"{out_dir}: exists, is not empty and is not an edgekit build; "
                                "choose another -o directory")


def make_parents(path: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (outermost first)."""
    missing = []
    p = path.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


@contextmanager
def staged_build_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` to write the build into; renamed to ``out_dir`` (replacing an
    earlier build) when the block succeeds, removed with any parents it created when it fails."""
    created = make_parents(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):  # leave the file system as it was
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
