"""Cross-compiling and linking the firmware of a build, refusing an image that does not fit its
board with the numbers of every memory region (memory.fit_report)."""
from __future__ import annotations

from pathlib import Path

from ...errors import ToolchainError
from ...targets import Board, Core
from . import toolchain as tc
from .memory import fit_report, raise_if_over


def compile_firmware(build: Path, core: Core, board: Board, linker_script: Path) -> Path:
    """Cross-compile src/ + firmware/ into firmware.elf (no libc, -O2, sections gc'd).

    If the image overflows the board's memory, link it once more with the lengths lifted
    (``<build>/firmware.oversize.elf``) and raise TargetError with the report of every region.
    """
    objects = tc.compile_objects(build, core)
    try:
        return tc.link_firmware(build, core, objects, linker_script)
    except ToolchainError as e:
        if "overflowed" not in str(e) and "will not fit" not in str(e):
            raise
    # measure the image, then refuse it with numbers
    big = tc.render_linker_script(core, board, build / "firmware" / "link.oversize.ld", oversize=True)
    elf = tc.link_firmware(build, core, objects, big, build / "firmware.oversize.elf")
    raise_if_over(fit_report(elf, board), board)
    raise ToolchainError("the linker refused the image for a reason other than its size (see above)")
