"""Conv + norm + activation blocks whose sub-module names are upstream NanoDet's state-dict keys.

``conv``, ``bn``/``gn``, ``depthwise``, ``dwnorm``, ``pointwise`` and ``pwnorm`` name the weights
in upstream checkpoints, so they must stay; ``act`` holds no weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn as nn

from .activation import act_layers
from .init_weights import constant_init, kaiming_init
from .norm import build_norm_layer


def _resolve_bias(bias, with_norm):
    # A conv followed by a norm layer does not need a bias: the norm's shift replaces it.
    if bias == "auto":
        return not with_norm
    if with_norm and bias:
        warnings.warn("conv module has a norm layer and a bias at the same time")
    return bias


def _kaiming_nonlinearity(activation):
    return "leaky_relu" if activation == "LeakyReLU" else "relu"


def _check_activation(activation):
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be a name or None, got {activation!r}")


class ConvModule(nn.Module):
    """Conv2d, optional norm and optional activation, applied in ``order``.

    ``bias="auto"`` gives the conv a bias only when there is no norm layer. The norm layer is
    registered under the name ``build_norm_layer`` returns (``bn`` or ``gn``: the checkpoint key)
    and is reachable as ``self.norm``. ``conv_cfg`` (a plain Conv2d is the only kind) and
    ``inplace`` (activations are always in place) are accepted for upstream's signature.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool | str = "auto",
                 conv_cfg: Mapping[str, Any] | None = None, norm_cfg: Mapping[str, Any] | None = None,
                 activation: str | None = "ReLU", inplace: bool = True,
                 order: Sequence[str] = ("conv", "norm", "act")) -> None:
        super().__init__()
        if conv_cfg is not None and not isinstance(conv_cfg, Mapping):
            raise TypeError(f"conv_cfg must be a mapping or None, got {conv_cfg!r}")
        if norm_cfg is not None and not isinstance(norm_cfg, Mapping):
            raise TypeError(f"norm_cfg must be a mapping or None, got {norm_cfg!r}")
        _check_activation(activation)
        order = tuple(order)
        if len(order) != 3 or set(order) != {"conv", "norm", "act"}:
            raise ValueError(f"order must arrange 'conv', 'norm', 'act', got {order}")
        self.order = order
        self.activation = activation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=_resolve_bias(bias, norm_cfg is not None))
        self.norm_name = None
        if norm_cfg is not None:
            norm_after_conv = order.index("norm") > order.index("conv")
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels if norm_after_conv else in_channels)
            self.add_module(self.norm_name, norm)
        if activation:
            self.act = act_layers(activation)
        self.init_weights()

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def init_weights(self) -> None:
        kaiming_init(self.conv, nonlinearity=_kaiming_nonlinearity(self.activation))
        if self.norm_name:
            constant_init(self.norm, 1, bias=0)

    def forward(self, x: torch.Tensor, norm: bool = True) -> torch.Tensor:
        for layer in self.order:
            if layer == "conv":
                x = self.conv(x)
            elif layer == "norm" and norm and self.norm_name:
                x = self.norm(x)
            elif layer == "act" and self.activation:
                x = self.act(x)
        return x


class DepthwiseConvModule(nn.Module):
    """Depthwise-separable conv: depthwise conv, norm, act, 1x1 conv, norm, act.

    The same activation module (``act``) is applied after both convs, as upstream. The norms have
    fixed names, ``dwnorm`` and ``pwnorm`` (not ``bn``/``gn``), as upstream checkpoints have them.
    ``inplace`` is accepted for upstream's signature (activations are always in place).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool | str = "auto",
                 norm_cfg: Mapping[str, Any] | None = dict(type="BN"), activation: str | None = "ReLU",
                 inplace: bool = True,
                 order: Sequence[str] = ("depthwise", "dwnorm", "act", "pointwise", "pwnorm", "act")) -> None:
        super().__init__()
        _check_activation(activation)
        order = tuple(order)
        if len(order) != 6 or set(order) != {"depthwise", "dwnorm", "act", "pointwise", "pwnorm"}:
            raise ValueError("order must arrange 'depthwise', 'dwnorm', 'pointwise', 'pwnorm' "
                             f"and 'act' twice, got {order}")
        self.order = order
        self.activation = activation
        self.with_norm = norm_cfg is not None
        with_bias = _resolve_bias(bias, self.with_norm)
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=in_channels, bias=with_bias)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=with_bias)
        if self.with_norm:
            _, self.dwnorm = build_norm_layer(norm_cfg, in_channels)
            _, self.pwnorm = build_norm_layer(norm_cfg, out_channels)
        if activation:
            self.act = act_layers(activation)
        self.init_weights()

    def init_weights(self) -> None:
        nonlinearity = _kaiming_nonlinearity(self.activation)
        kaiming_init(self.depthwise, nonlinearity=nonlinearity)
        kaiming_init(self.pointwise, nonlinearity=nonlinearity)
        if self.with_norm:
            constant_init(self.dwnorm, 1, bias=0)
            constant_init(self.pwnorm, 1, bias=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer_name in self.order:
            if layer_name == "act":
                if self.activation:
                    x = self.act(x)
            elif layer_name in ("dwnorm", "pwnorm"):
                if self.with_norm:
                    x = getattr(self, layer_name)(x)
            else:
                x = getattr(self, layer_name)(x)
        return x
