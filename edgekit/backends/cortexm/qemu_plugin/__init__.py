"""edgekit's QEMU TCG plugin (``ek_insn.c``): exact executed-instruction counts.

The plugin is a small shared library that qemu-system-arm loads with ``-plugin``. It
is compiled against ``qemu-plugin.h``, which no Debian binary package ships; the
set-up (``scripts/setup.sh``) takes it from Debian's ``qemu`` source package, of the
same version as the installed QEMU, and builds the plugin into
``<venv>/share/edgekit/qemu-plugin/``.

Lookup order for the plugin: ``$EDGEKIT_QEMU_PLUGIN`` (a built ``.so``), then the
set-up's location; if only the header is there (or in ``$EDGEKIT_QEMU_PLUGIN_INCLUDE``,
or installed system-wide), the plugin is compiled on first use.

``python -m edgekit.backends.cortexm.qemu_plugin [--include DIR]`` builds it and prints
its path.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ....errors import ToolchainError
from .. import toolchain as tc

SOURCE = Path(__file__).resolve().parent / "ek_insn.c"
LIBRARY = "libek_insn.so"
HEADER = "qemu-plugin.h"


def plugin_dir() -> Path:
    return Path(sys.prefix) / "share" / "edgekit" / "qemu-plugin"


def _header_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("EDGEKIT_QEMU_PLUGIN_INCLUDE"):
        dirs.append(Path(os.environ["EDGEKIT_QEMU_PLUGIN_INCLUDE"]))
    dirs += [plugin_dir() / "include", Path("/usr/include/qemu"), Path("/usr/include")]
    return [d for d in dirs if (d / HEADER).is_file()]


def build_plugin(include_dir: Path | None = None, dest: Path | None = None) -> Path:
    """Compile ek_insn.c against qemu-plugin.h into ``dest`` (default: the set-up's location)."""
    dirs = [Path(include_dir)] if include_dir else _header_dirs()
    if not dirs or not (dirs[0] / HEADER).is_file():
        raise ToolchainError(
            "the QEMU instruction-count plugin is not built and qemu-plugin.h was not found; run "
            "`make setup` (scripts/setup.sh takes the header from Debian's qemu source package), "
            "or set EDGEKIT_QEMU_PLUGIN_INCLUDE to a directory holding qemu-plugin.h of your QEMU version")
    dest = Path(dest) if dest else plugin_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / LIBRARY
    tmp = dest / f".{LIBRARY}.{os.getpid()}"
    tc.run_tool([tc.host_cc(), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", f"-I{dirs[0]}",
             str(SOURCE), "-o", str(tmp)], "compiling the QEMU instruction-count plugin")
    tmp.replace(out)
    return out


def find_plugin() -> Path:
    """The built plugin, compiling it first if the header is available and it is missing or stale."""
    env = os.environ.get("EDGEKIT_QEMU_PLUGIN")
    if env:
        if not Path(env).is_file():
            raise ToolchainError(f"EDGEKIT_QEMU_PLUGIN={env}: no such file")
        return Path(env)
    lib = plugin_dir() / LIBRARY
    if lib.is_file() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return lib
    if lib.is_file() and not _header_dirs():
        return lib  # stale but cannot be rebuilt here: the counting protocol has not changed
    try:
        return build_plugin()
    except PermissionError:
        return build_plugin(dest=Path.home() / ".cache" / "edgekit" / "qemu-plugin")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgekit.backends.cortexm.qemu_plugin",
                                description="Build edgekit's QEMU instruction-count plugin.")
    p.add_argument("--include", help="directory holding qemu-plugin.h")
    p.add_argument("--dest", help=f"output directory (default {plugin_dir()})")
    a = p.parse_args(argv)
    try:
        print(build_plugin(a.include, a.dest))
    except ToolchainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
