"""Post-training quantization settings: which Brevitas quantizers a float layer gets.

The same choices as edgekit.qat's presets (``edgekit.qat.presets``): power-of-two scales
(every rescale a rounding shift: bit-exact end to end, qonnx included) or float scales
(the integer stages agree exactly, qonnx within an LSB); 8-, 4- or 2-bit weights; one weight
scale per tensor or per output channel. Activations are 8-bit, biases int32.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EdgekitError

SCALES = ("pow2", "float")
WEIGHT_BITS = (8, 4, 2)


@dataclass(frozen=True)
class PtqSettings:
    weight_bits: int = 8
    scales: str = "pow2"
    per_channel: bool = False
    # cross-layer equalization iterations before quantizing (0: off)
    equalize_iterations: int = 0
    bias_correction: bool = True

    def __post_init__(self):
        if self.scales not in SCALES:
            raise EdgekitError(f"scales '{self.scales}': choose one of {', '.join(SCALES)}")
        if self.weight_bits not in WEIGHT_BITS:
            raise EdgekitError(f"weight bits {self.weight_bits}: choose one of {', '.join(map(str, WEIGHT_BITS))}")
        if self.equalize_iterations < 0:
            raise EdgekitError(f"equalize iterations {self.equalize_iterations}: must be 0 or more")

    @property
    def power_of_two(self) -> bool:
        return self.scales == "pow2"

    def describe(self) -> str:
        return (f"{self.weight_bits}-bit weights ({'per channel' if self.per_channel else 'per tensor'}), "
                f"8-bit activations, {'power-of-two' if self.power_of_two else 'float'} scales")

    def quantizers(self) -> dict[str, type]:
        """Brevitas quantizer classes by role. Sub-8-bit weights take the MSE-fitted scale (a
        max-abs scale wastes most of 16 or 4 levels on rare outliers)."""
        from brevitas.quant import fixed_point as fp
        from brevitas.quant import scaled_int as si

        grid = "FixedPoint" if self.power_of_two else "Float"
        # e.g. Int8WeightPerChannelFixedPointMSE; the bit width is set on the layer
        weight = f"Int8WeightPer{'Channel' if self.per_channel else 'Tensor'}{grid}{'MSE' if self.weight_bits < 8 else ''}"
        module = fp if self.power_of_two else si
        return {"weight": getattr(module, weight), "signed_act": getattr(module, f"Int8ActPerTensor{grid}"),
                "unsigned_act": getattr(module, f"Uint8ActPerTensor{grid}"), "bias": si.Int32Bias}


def default_scales(model) -> str:
    """float for Keras (the TFLite converter's only scheme), pow2 otherwise (bit-exact end to end)."""
    from pathlib import Path

    if isinstance(model, (str, Path)):
        return "float" if Path(model).suffix.lower() == ".keras" else "pow2"
    return "float" if type(model).__module__.split(".")[0] in ("keras", "tensorflow", "tf_keras") else "pow2"
