"""edgekit: from quantization-aware training to verified firmware on microcontrollers."""
from .version import __version__

from .api import build, validate, verify

__all__ = ["__version__", "build", "validate", "verify"]
