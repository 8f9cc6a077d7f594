"""Model building blocks: a quantized MLP and its float twin (for the float baseline)."""
from __future__ import annotations

import math

import brevitas.nn as qnn
import torch
from torch import nn

from .presets import QuantPreset, get_preset


class QuantMLP(nn.Module):
    """Flatten -> input quantizer -> [QuantLinear -> QuantReLU]* -> QuantLinear -> output quantizer.

    The output quantizer makes the logits int8 codes, so firmware returns integers
    that the host compares exactly.
    """

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], n_classes: int,
                 preset: QuantPreset | str = "int8-pow2"):
        super().__init__()
        p = get_preset(preset) if isinstance(preset, str) else preset
        self.preset = p
        self.input_quant = qnn.QuantIdentity(act_quant=p.input_quant, return_quant_tensor=True)
        layers: list[nn.Module] = []
        width = math.prod(input_shape)
        for h in hidden:
            layers += [
                qnn.QuantLinear(width, h, bias=True, weight_quant=p.weight_quant,
                                weight_bit_width=p.weight_bit_width, bias_quant=p.bias_quant,
                                return_quant_tensor=True),
                qnn.QuantReLU(act_quant=p.relu_quant, return_quant_tensor=True),
            ]
            width = h
        layers.append(qnn.QuantLinear(width, n_classes, bias=True, weight_quant=p.weight_quant,
                                      weight_bit_width=p.weight_bit_width, bias_quant=p.bias_quant,
                                      return_quant_tensor=True))
        self.layers = nn.Sequential(*layers)
        self.output_quant = qnn.QuantIdentity(act_quant=p.output_quant, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quant(self.layers(self.input_quant(x.flatten(1))))


class FloatMLP(nn.Module):
    """The same architecture in float, for the float-vs-QAT accuracy comparison."""

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], n_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))
