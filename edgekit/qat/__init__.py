"""Quantization-aware training with Brevitas: quantizer presets, building blocks, training, export."""
from .blocks import FloatMLP, QuantMLP
from .export import export_qonnx
from .presets import PRESETS, QuantPreset, get_preset
from .train import evaluate, train

__all__ = ["FloatMLP", "PRESETS", "QuantMLP", "QuantPreset", "evaluate", "export_qonnx", "get_preset", "train"]
