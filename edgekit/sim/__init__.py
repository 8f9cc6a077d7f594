"""The golden integer simulator: runs the IR over whole numpy batches, exactly per contract."""
from .simulator import quantize_input, simulate

__all__ = ["quantize_input", "simulate"]
