"""TFLite front end: an int8 ``.tflite`` flatbuffer -> edgekit's integer IR.

The flatbuffer is read with the ``tflite`` package (the schema's generated classes).
Every operator is lowered onto an IR op whose arithmetic reproduces the TFLite Micro
reference kernel exactly (docs/integer-contract.md, section 9). TFLite is NHWC, so IR
shapes are the TFLite shapes without the batch axis.

- ``reader``: the flatbuffer (tensors, quantization, constant data) and its sanity checks;
- ``params``: TFLite's parameter arithmetic (activation ranges, padding);
- ``importer``: the model-level import (``import_tflite``: interface, operator walk, graph);
- ``operands``: the weights, bias and requantization helpers the operator lowerings share;
- ``registry``: ``LOWERINGS``, filled by the ``@lowering`` decorator of the modules in ``ops/``
  (one per operator family, discovered with pkgutil).

Anything else is refused with an :class:`UnsupportedOpError` that names the operator
index and its op name.
"""
