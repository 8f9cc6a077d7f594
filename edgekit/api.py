"""The Python API; the CLI is a thin layer over these functions."""
from .build import BuildResult, build, load_manifest
from .verify import VerifyReport, generate_inputs, verify

__all__ = ["BuildResult", "VerifyReport", "build", "generate_inputs", "load_manifest", "verify"]
