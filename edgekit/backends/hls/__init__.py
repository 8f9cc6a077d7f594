"""FPGA backend: an hls4ml project whose fixed-point types come from edgekit's integer IR.

``build_fpga`` writes the project (see :mod:`.build`), ``verify_hls`` compiles hls4ml's
C-simulation with g++ and compares it with edgekit's simulator (see :mod:`.verify`).
hls4ml is imported lazily: it is the optional ``hls`` extra.
"""
from .boards import FpgaBoard, get_fpga_board, list_fpga_boards

__all__ = ["FpgaBoard", "build_fpga", "get_fpga_board", "list_fpga_boards", "verify_hls"]


def build_fpga(*args, **kwargs):
    from .build import build_fpga as _build

    return _build(*args, **kwargs)


def verify_hls(*args, **kwargs):
    from .verify import verify_hls as _verify

    return _verify(*args, **kwargs)
