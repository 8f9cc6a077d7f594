"""Named quantizer presets.

* ``int8-pow2``: 8-bit weights and activations with power-of-two ("fixed-point") scales
  and int32 biases. Every rescale is a rounding shift, so the whole chain - Brevitas,
  qonnx, simulator, C, firmware - is bit-exact.
* ``w4a8-pow2`` / ``w2a8-pow2``: 4- or 2-bit weights (packed in flash), 8-bit
  activations, power-of-two scales; also exact.
* ``int8-pow2-pc``: ``int8-pow2`` with one power-of-two weight scale per output channel
  (the per-channel requantization of the integer contract); also exact.
* ``int8-float``: 8-bit with learned float scales (TFLite-style). Simulator, C and
  firmware agree exactly; qonnx (float32) may differ by an LSB now and then.
"""
from __future__ import annotations

from dataclasses import dataclass

from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)

from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint

from ..errors import EdgekitError


@dataclass(frozen=True)
class QuantPreset:
    name: str
    input_quant: type
    weight_quant: type
    weight_bit_width: int
    bias_quant: type
    relu_quant: type
    output_quant: type
    power_of_two: bool
    description: str


PRESETS = {
    p.name: p
    for p in (
        QuantPreset("int8-pow2", Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, 8, Int32Bias,
                    Uint8ActPerTensorFixedPoint, Int8ActPerTensorFixedPoint, True,
                    "8-bit, power-of-two scales: bit-exact end to end"),
        QuantPreset("w4a8-pow2", Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, 4, Int32Bias,
                    Uint8ActPerTensorFixedPoint, Int8ActPerTensorFixedPoint, True,
                    "4-bit weights, 8-bit activations, power-of-two scales: bit-exact end to end"),
        QuantPreset("w2a8-pow2", Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, 2, Int32Bias,
                    Uint8ActPerTensorFixedPoint, Int8ActPerTensorFixedPoint, True,
                    "2-bit (ternary, narrow range) weights, 8-bit activations, power-of-two scales: bit-exact"),
        QuantPreset("int8-pow2-pc", Int8ActPerTensorFixedPoint, Int8WeightPerChannelFixedPoint, 8, Int32Bias,
                    Uint8ActPerTensorFixedPoint, Int8ActPerTensorFixedPoint, True,
                    "8-bit, power-of-two scales, one weight scale per output channel: bit-exact end to end"),
        QuantPreset("int8-float", Int8ActPerTensorFloat, Int8WeightPerTensorFloat, 8, Int32Bias,
                    Uint8ActPerTensorFloat, Int8ActPerTensorFloat, False,
                    "8-bit, float scales: integer stages exact, qonnx within an LSB"),
    )
}


def get_preset(name: str) -> QuantPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise EdgekitError(f"unknown quantizer preset '{name}'; available: {', '.join(PRESETS)}") from None
