"""FPGA backend: an hls4ml project whose fixed-point types come from edgekit's integer IR.

``backend.HlsBackend`` (edgekit.backends.base.Backend) builds the project (see :mod:`.build`),
verifies it with hls4ml's C-simulation against edgekit's simulator (see :mod:`.verify`),
reports its precisions and estimates and exports it (see :mod:`.export`). hls4ml is
imported lazily: it is the optional ``hls`` extra.
"""
