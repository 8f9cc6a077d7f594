"""Cortex-M back end: Jinja-generated C99, a static memory plan, arm-none-eabi-gcc, QEMU."""
from .codegen import generate_c

__all__ = ["generate_c"]
