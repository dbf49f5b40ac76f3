"""MobileNetV2 backbone with upstream NanoDet's layout (``first_layer``, ``stage0``..``stage6``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..module.activation import act_layers
from .pretrained import load_pretrained

# torchvision's ImageNet weights (IMAGENET1K_V1), published for width_mult 1.0 only.
TORCHVISION_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"

# Per stage: expansion t, output channels c, repeats n, first stride s (the paper's table).
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class ConvBNReLU(nn.Sequential):
    """Conv (same padding, no bias), BatchNorm and activation, keyed 0, 1, 2."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: str | None = "ReLU") -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            act_layers(activation),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when expand_ratio is 1), 3x3 depthwise, linear 1x1 projection."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float, activation: str | None = "ReLU") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup

        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1, activation=activation))
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, activation=activation),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 returning the outputs of ``out_stages`` (indices 0..6 of the table above;
    stage6 ends with the 1x1 conv to ``last_channel``).

    Strides of stages 0..6: 2, 4, 8, 16, 16, 32, 32. ``act`` is upstream's deprecated alias of
    ``activation``. ``pretrain`` (not in upstream, which always starts from random weights;
    hence default False): True loads torchvision's ImageNet weights (width_mult 1.0 and
    last_channel 1280 only), a path loads a torchvision-format file.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        out_stages: Sequence[int] = (1, 2, 4, 6),
        last_channel: int = 1280,
        activation: str | None = "ReLU",
        act: str | None = None,
        pretrain: bool | str | Path | None = False,
    ) -> None:
        super().__init__()
        if not set(out_stages) <= set(range(7)):
            raise ValueError(f"MobileNetV2 out_stages must be a subset of 0..6, got {out_stages}")
        self.width_mult = width_mult
        self.out_stages = out_stages
        self.last_channel = last_channel
        self.activation = activation
        if act is not None:
            warnings.warn("MobileNetV2: `act` is deprecated, use `activation` instead")
            self.activation = act
        self.interverted_residual_setting = INVERTED_RESIDUAL_SETTING  # upstream's spelling

        # Running input width while stages are built.
        self.input_channel = int(32 * width_mult)
        self.first_layer = ConvBNReLU(3, self.input_channel, stride=2, activation=self.activation)
        for stage_num in range(7):
            setattr(self, f"stage{stage_num}", self.build_mobilenet_stage(stage_num))

        self._initialize_weights()
        load_pretrained(
            self,
            pretrain,
            TORCHVISION_URL if width_mult == 1.0 else None,
            rename_key=torchvision_to_nanodet_key,
            unavailable_reason=(
                f"torchvision publishes MobileNetV2 ImageNet weights for width_mult 1.0 only "
                f"(got {width_mult})"
            ),
        )

    def build_mobilenet_stage(self, stage_num: int) -> nn.Sequential:
        expand_ratio, channels, repeats, first_stride = self.interverted_residual_setting[stage_num]
        output_channel = int(channels * self.width_mult)
        blocks = []
        for block_index in range(repeats):
            stride = first_stride if block_index == 0 else 1
            blocks.append(
                InvertedResidual(
                    self.input_channel,
                    output_channel,
                    stride,
                    expand_ratio=expand_ratio,
                    activation=self.activation,
                )
            )
            self.input_channel = output_channel
        if stage_num == 6:
            blocks.append(
                ConvBNReLU(self.input_channel, self.last_channel, kernel_size=1, activation=self.activation)
            )
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.first_layer(x)
        outputs = []
        for stage_num in range(7):
            x = getattr(self, f"stage{stage_num}")(x)
            if stage_num in self.out_stages:
                outputs.append(x)
        return tuple(outputs)

    def _initialize_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _torchvision_feature_names():
    """Our module prefix for each index of torchvision's ``features`` Sequential."""
    names = ["first_layer"]
    for stage_num, (_, _, repeats, _) in enumerate(INVERTED_RESIDUAL_SETTING):
        names += [f"stage{stage_num}.{block_index}" for block_index in range(repeats)]
    names.append(f"stage6.{INVERTED_RESIDUAL_SETTING[6][2]}")  # torchvision's final 1x1 conv
    return names


_FEATURE_NAMES = _torchvision_feature_names()


def torchvision_to_nanodet_key(key: str) -> str | None:
    """``features.<i>.rest`` -> ``<our module>.rest``; the classifier maps to None.

    Inside each block both models use the same names (``conv.0.0.weight``...).
    """
    parts = key.split(".", 2)
    if parts[0] != "features" or len(parts) < 3 or not parts[1].isdigit():
        return None
    index = int(parts[1])
    if index >= len(_FEATURE_NAMES):
        return None
    return f"{_FEATURE_NAMES[index]}.{parts[2]}"
