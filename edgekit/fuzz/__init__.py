"""``edgekit fuzz``: differential fuzzing of the whole tool chain with random quantized graphs.

``qonnx_gen`` and ``tflite_gen`` draw random graphs (seeded specs), ``runner`` builds and
verifies one through every stage and classifies the outcome, ``shrink`` reduces a failing
spec, ``campaign`` runs many and reports; see docs/fuzz.md.
"""
