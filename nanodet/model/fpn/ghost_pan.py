"""GhostPAN, the neck of NanoDet-Plus: a PAN whose fusion blocks are GhostNet bottlenecks.

The Ghost blocks live here (upstream keeps them in its GhostNet backbone) because the neck is
their only user in this package. Their attribute names are upstream's state-dict keys, and,
as upstream, they keep PyTorch's default initialisation (GhostNet's own init is not applied).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..module.activation import act_layers
from ..module.conv import ConvModule, DepthwiseConvModule


def _make_divisible(value, divisor, min_value=None):
    """Round ``value`` to a multiple of ``divisor``, never more than 10% below it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hard_sigmoid(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    if inplace:
        return x.add_(3.0).clamp_(0.0, 6.0).div_(6.0)
    return F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 reduce, activation, 1x1 expand, hard-sigmoid gate."""

    def __init__(
        self,
        in_chs: int,
        se_ratio: float = 0.25,
        reduced_base_chs: int | None = None,
        activation: str | None = "ReLU",
        gate_fn: Callable[[torch.Tensor], torch.Tensor] = hard_sigmoid,
        divisor: int = 4,
    ) -> None:
        super().__init__()
        self.gate_fn = gate_fn
        reduced_chs = _make_divisible((reduced_base_chs or in_chs) * se_ratio, divisor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
        self.act1 = act_layers(activation)
        self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * self.gate_fn(gate)


class GhostModule(nn.Module):
    """Half the outputs from a regular conv, the other half from a cheap depthwise conv of them."""

    def __init__(self, inp: int, oup: int, kernel_size: int = 1, ratio: int = 2, dw_size: int = 3, stride: int = 1,
                 activation: str | None = "ReLU") -> None:
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels),
            act_layers(activation) if activation else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(
                init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False
            ),
            nn.BatchNorm2d(new_channels),
            act_layers(activation) if activation else nn.Sequential(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        return torch.cat([primary, self.cheap_operation(primary)], dim=1)


class GhostBottleneck(nn.Module):
    """Ghost module, optional strided depthwise conv and SE, linear ghost module, plus shortcut."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        activation: str | None = "ReLU",
        se_ratio: float | None = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, activation=activation)
        if stride > 1:
            self.conv_dw = nn.Conv2d(
                mid_chs,
                mid_chs,
                dw_kernel_size,
                stride=stride,
                padding=(dw_kernel_size - 1) // 2,
                groups=mid_chs,
                bias=False,
            )
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        has_se = se_ratio is not None and se_ratio > 0.0
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if has_se else None
        self.ghost2 = GhostModule(mid_chs, out_chs, activation=None)

        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            # Depthwise-separable projection so the residual matches the output's shape.
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_chs,
                    in_chs,
                    dw_kernel_size,
                    stride=stride,
                    padding=(dw_kernel_size - 1) // 2,
                    groups=in_chs,
                    bias=False,
                ),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        x += self.shortcut(residual)
        return x


class GhostBlocks(nn.Module):
    """``num_blocks`` GhostBottlenecks, optionally with a 1x1 conv residual around them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand: float = 1,
        kernel_size: int = 5,
        num_blocks: int = 1,
        use_res: bool = False,
        activation: str | None = "LeakyReLU",
    ) -> None:
        super().__init__()
        self.use_res = use_res
        if use_res:
            # No norm_cfg, so this conv has a bias and no norm (as upstream).
            self.reduce_conv = ConvModule(
                in_channels, out_channels, kernel_size=1, stride=1, padding=0, activation=activation
            )
        self.blocks = nn.Sequential(
            *[
                GhostBottleneck(
                    in_channels,
                    int(out_channels * expand),
                    out_channels,
                    dw_kernel_size=kernel_size,
                    activation=activation,
                )
                for _ in range(num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x)
        if self.use_res:
            out = out + self.reduce_conv(x)
        return out


class GhostPAN(nn.Module):
    """Path Aggregation Network with Ghost blocks.

    Inputs are reduced to ``out_channels`` by 1x1 convs, fused top-down (upsample, concat,
    GhostBlocks), then bottom-up (strided conv, concat, GhostBlocks). Each extra level is
    ``extra_in(reduced top input) + extra_out(last output)``, both strided convs.
    Returns ``len(in_channels) + num_extra_level`` maps of ``out_channels`` channels.

    Note: with more than one ``num_blocks``, every block takes ``2 * out_channels`` inputs,
    exactly as upstream (which therefore only works with ``num_blocks=1``).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        use_depthwise: bool = False,
        kernel_size: int = 5,
        expand: float = 1,
        num_blocks: int = 1,
        use_res: bool = False,
        num_extra_level: int = 0,
        upsample_cfg: Mapping[str, Any] = dict(scale_factor=2, mode="bilinear"),
        norm_cfg: Mapping[str, Any] | None = dict(type="BN"),
        activation: str | None = "LeakyReLU",
    ) -> None:
        super().__init__()
        if num_extra_level < 0:
            raise ValueError(f"num_extra_level must be >= 0, got {num_extra_level}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        conv = DepthwiseConvModule if use_depthwise else ConvModule

        def ghost_blocks():
            return GhostBlocks(
                out_channels * 2,
                out_channels,
                expand,
                kernel_size=kernel_size,
                num_blocks=num_blocks,
                use_res=use_res,
                activation=activation,
            )

        def strided_conv():
            return conv(
                out_channels,
                out_channels,
                kernel_size,
                stride=2,
                padding=kernel_size // 2,
                norm_cfg=norm_cfg,
                activation=activation,
            )

        self.upsample = nn.Upsample(**upsample_cfg)
        self.reduce_layers = nn.ModuleList(
            ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg, activation=activation)
            for channels in in_channels
        )
        # Module creation order below follows upstream, so a seeded init matches it too.
        self.top_down_blocks = nn.ModuleList(ghost_blocks() for _ in range(len(in_channels) - 1))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for _ in range(len(in_channels) - 1):
            self.downsamples.append(strided_conv())
            self.bottom_up_blocks.append(ghost_blocks())
        self.extra_lvl_in_conv = nn.ModuleList()
        self.extra_lvl_out_conv = nn.ModuleList()
        for _ in range(num_extra_level):
            self.extra_lvl_in_conv.append(strided_conv())
            self.extra_lvl_out_conv.append(strided_conv())

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f"GhostPAN expects {len(self.in_channels)} feature maps, got {len(inputs)}"
            )
        inputs = [reduce(x) for x, reduce in zip(inputs, self.reduce_layers)]

        # Top-down: start from the coarsest map; inner_outs ends finest-first.
        inner_outs = [inputs[-1]]
        for idx in range(len(self.in_channels) - 1, 0, -1):
            coarser = inner_outs[0]
            finer = inputs[idx - 1]
            block = self.top_down_blocks[len(self.in_channels) - 1 - idx]
            inner_outs.insert(0, block(torch.cat([self.upsample(coarser), finer], 1)))

        # Bottom-up: from the finest map, downsample and fuse with the next top-down output.
        outs = [inner_outs[0]]
        for idx in range(len(self.in_channels) - 1):
            downsampled = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([downsampled, inner_outs[idx + 1]], 1)))

        for extra_in, extra_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(extra_in(inputs[-1]) + extra_out(outs[-1]))
        return tuple(outs)
