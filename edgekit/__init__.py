"""edgekit: from quantization-aware training to verified firmware on microcontrollers."""
import warnings

# Brevitas warns on import that an optional accelerator it never needs here is missing; the
# exact message only, so that every other warning still shows.
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found, using standard pytorch kernels",
                        category=UserWarning)

from .version import __version__  # noqa: E402

from .api import build, quantize, validate, verify  # noqa: E402

__all__ = ["__version__", "build", "quantize", "validate", "verify"]
