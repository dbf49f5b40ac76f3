"""ShuffleNetV2 backbone, laid out like torchvision's so its ImageNet weights load by key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..module.activation import act_layers
from .pretrained import load_pretrained

logger = logging.getLogger(__name__)

# Output channels of conv1, stage2, stage3, stage4 and the optional conv5.
STAGE_OUT_CHANNELS = {
    "0.5x": [24, 48, 96, 192, 1024],
    "1.0x": [24, 116, 232, 464, 1024],
    "1.5x": [24, 176, 352, 704, 1024],
    "2.0x": [24, 244, 488, 976, 2048],
}
STAGE_REPEATS = [4, 8, 4]

# torchvision's ImageNet weights (IMAGENET1K_V1) for each size.
TORCHVISION_URLS = {
    "0.5x": "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth",
    "1.0x": "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth",
    "1.5x": "https://download.pytorch.org/models/shufflenetv2_x1_5-3c479a10.pth",
    "2.0x": "https://download.pytorch.org/models/shufflenetv2_x2_0-8be3c8ee.pth",
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch_size, num_channels, height, width = x.size()
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # Shuffle along the innermost (channel) axis, so the result stays channels_last: the
        # usual version returns NCHW, which the next convolution converts back (two copies).
        nhwc = x.permute(0, 2, 3, 1).reshape(batch_size, height, width, groups, num_channels // groups)
        return nhwc.transpose(3, 4).reshape(batch_size, height, width, num_channels).permute(0, 3, 1, 2)
    x = x.view(batch_size, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch_size, -1, height, width)


def depthwise_conv(channels: int, kernel_size: int, stride: int, padding: int) -> nn.Conv2d:
    return nn.Conv2d(
        channels, channels, kernel_size, stride, padding, bias=False, groups=channels
    )


class ShuffleV2Block(nn.Module):
    """One ShuffleNetV2 unit. Stride 1 splits the channels and transforms one half;
    stride 2 transforms the whole input twice (branch1, branch2) and concatenates."""

    def __init__(self, inp: int, oup: int, stride: int, activation: str | None = "ReLU") -> None:
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"illegal stride value {stride}")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features * 2:
            raise ValueError(f"a stride-1 block needs inp == oup, got {inp} and {oup}")

        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_conv(inp, 3, stride, 1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                act_layers(activation),
            )
        else:
            self.branch1 = nn.Sequential()  # keeps torchvision's (empty) key layout

        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            act_layers(activation),
            depthwise_conv(branch_features, 3, stride, 1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            act_layers(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 returning the feature maps of ``out_stages`` (2, 3, 4 at strides 8, 16, 32).

    ``kernal_size`` (upstream's spelling) is accepted for config compatibility and, as
    upstream, unused: every depthwise conv is 3x3. ``with_last_conv`` appends torchvision's
    1x1 ``conv5`` to stage4 (as ``stage4.conv5``). ``pretrain``: see ``pretrained.py``.
    """

    def __init__(
        self,
        model_size: str = "1.5x",
        out_stages: Sequence[int] = (2, 3, 4),
        with_last_conv: bool = False,
        kernal_size: int = 3,
        activation: str | None = "ReLU",
        pretrain: bool | str | Path | None = True,
    ) -> None:
        super().__init__()
        if model_size not in STAGE_OUT_CHANNELS:
            raise ValueError(
                f"unknown ShuffleNetV2 model_size {model_size!r}; known: {list(STAGE_OUT_CHANNELS)}"
            )
        if not set(out_stages) <= {2, 3, 4}:
            raise ValueError(f"ShuffleNetV2 out_stages must be a subset of (2, 3, 4), got {out_stages}")
        self.stage_repeats = STAGE_REPEATS
        self.model_size = model_size
        self.out_stages = out_stages
        self.with_last_conv = with_last_conv
        self.kernal_size = kernal_size
        self.activation = activation
        self._stage_out_channels = STAGE_OUT_CHANNELS[model_size]

        stem_channels = self._stage_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_channels),
            act_layers(activation),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        input_channels = stem_channels
        for stage_index, repeats, output_channels in zip(
            (2, 3, 4), self.stage_repeats, self._stage_out_channels[1:]
        ):
            blocks = [ShuffleV2Block(input_channels, output_channels, 2, activation=activation)]
            blocks += [
                ShuffleV2Block(output_channels, output_channels, 1, activation=activation)
                for _ in range(repeats - 1)
            ]
            setattr(self, f"stage{stage_index}", nn.Sequential(*blocks))
            input_channels = output_channels

        if with_last_conv:
            last_channels = self._stage_out_channels[-1]
            self.stage4.add_module(
                "conv5",
                nn.Sequential(
                    nn.Conv2d(input_channels, last_channels, 1, 1, 0, bias=False),
                    nn.BatchNorm2d(last_channels),
                    act_layers(activation),
                ),
            )
        self._initialize_weights(pretrain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.conv1(x))
        outputs = []
        for stage_index in (2, 3, 4):
            x = getattr(self, f"stage{stage_index}")(x)
            if stage_index in self.out_stages:
                outputs.append(x)
        return tuple(outputs)

    def _initialize_weights(self, pretrain=True):
        # Upstream's scheme: N(0, 1/fan_in_per_group) convs, BN scale 1 and bias 1e-4.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 1.0 / module.weight.shape[1])
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0.0001)
                nn.init.constant_(module.running_mean, 0)
        load_pretrained(
            self, pretrain, TORCHVISION_URLS[self.model_size], rename_key=self._torchvision_key
        )

    def _torchvision_key(self, key):
        # Same names as torchvision except its conv5, which upstream nests in stage4.
        if key.startswith("conv5."):
            return "stage4." + key if self.with_last_conv else None
        return key
