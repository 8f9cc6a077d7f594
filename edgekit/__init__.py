"""edgekit: from quantization-aware training to verified firmware on microcontrollers."""
__version__ = "0.1.0"

from .api import build, verify  # noqa: E402

__all__ = ["__version__", "build", "verify"]
