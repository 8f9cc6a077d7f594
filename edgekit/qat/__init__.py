"""Quantization-aware training with Brevitas: quantizer presets, building blocks, training, export."""
from .blocks import FloatMLP, QuantMLP
from .export import export_qonnx
from .mixed_precision_alloc import CostTable, MixedPrecisionResult, allocate, mixed_precision, pareto_sweep
from .presets import PRESETS, QuantPreset, get_preset
from .train import evaluate, train

__all__ = ["CostTable", "FloatMLP", "MixedPrecisionResult", "PRESETS", "QuantMLP", "QuantPreset", "allocate", "evaluate",
           "export_qonnx", "get_preset", "mixed_precision", "pareto_sweep", "train"]
