"""Helpers shared by the test modules: model builders (Brevitas, TFLite, fixed QONNX),
activation calibration, input codes, and the per-operator build-and-verify check."""
