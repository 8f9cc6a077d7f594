"""FPGA backend: an hls4ml project whose fixed-point types come from edgekit's integer IR.

``backend.HlsBackend`` (edgekit.backends.base.Backend) builds the project (see :mod:`.build`),
verifies it with hls4ml's C-simulation against edgekit's simulator (see :mod:`.verify`),
reports its precisions and estimates and exports it (see :mod:`.export`). hls4ml is
imported lazily: it is the optional ``hls`` extra.
"""
import os

# hls4ml's converters import Keras and so TensorFlow, whose C++ start-up lines (CPU features; the
# oneDNN notice, which TF_CPP_MIN_LOG_LEVEL does not silence) say nothing to an edgekit user: no
# TensorFlow arithmetic runs on this path. A user's own settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
