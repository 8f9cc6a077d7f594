"""User-facing errors.

Every problem a user can cause (bad model, unknown board, missing tool, a model that
cannot be held in integers) is raised as an :class:`EdgekitError` subclass with a
message that names the node, op or file and says what to do. The CLI prints the
message and exits nonzero; anything else escaping is a bug in edgekit.
"""


class EdgekitError(Exception):
    """Base class for user-facing errors."""

    exit_code = 2


class ModelError(EdgekitError):
    """The model file or graph cannot be compiled (corrupt, unquantized, unsupported)."""


class UnsupportedOpError(ModelError):
    """An op, attribute or shape that no lowering handles."""


class ContractError(ModelError):
    """The graph cannot be computed exactly under the integer contract (overflow, widths)."""


class ScaleRatioError(ContractError, ValueError):
    """A scale ratio the requantization cannot represent (raised by the contract without the node;
    the front end that lowers the node names it)."""


class TargetError(EdgekitError):
    """Unknown core or board, or a board that does not match the core."""


class ToolchainError(EdgekitError):
    """A required external tool (cross-compiler, QEMU, host compiler) is missing or failed."""


class BuildDirError(EdgekitError):
    """The build directory is missing, incomplete or not an edgekit build."""


class DatasetError(EdgekitError):
    """A data set cannot be loaded."""


class VerificationError(EdgekitError):
    """A stage could not be run during verification (not a mismatch: those are reported)."""


class RegistryError(EdgekitError):
    """Two modules register the same operator, lowering or resolver (a bug in edgekit or a plug-in)."""


class UnsupportedCommandError(BuildDirError):
    """A command that does not apply to the backend that made the build (e.g. profile on an FPGA build)."""
