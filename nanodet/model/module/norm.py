"""Normalisation layers from a config dict, named the way upstream names them in state dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

# type -> (attribute name prefix, layer class); the prefix becomes e.g. `reduce_layers.0.bn.weight`.
NORM_LAYERS = {
    "BN": ("bn", nn.BatchNorm2d),
    "SyncBN": ("bn", nn.SyncBatchNorm),
    "GN": ("gn", nn.GroupNorm),
}


def build_norm_layer(cfg: Mapping[str, Any], num_features: int, postfix: int | str = "") -> tuple[str, nn.Module]:
    """Build a norm layer from ``{type: BN}`` or ``{type: GN, num_groups: N}``.

    Returns ``(name, layer)``; callers register the layer under ``name`` so that
    state-dict keys match upstream checkpoints. ``requires_grad: false`` freezes it.
    """
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"norm config must be a mapping with a 'type', got {cfg!r}")
    options = dict(cfg)
    layer_type = options.pop("type")
    if layer_type not in NORM_LAYERS:
        raise ValueError(f"unknown norm type {layer_type!r}; known: {sorted(NORM_LAYERS)}")
    prefix, layer_class = NORM_LAYERS[layer_type]
    name = prefix + str(postfix)

    requires_grad = options.pop("requires_grad", True)
    options.setdefault("eps", 1e-5)
    if layer_type == "GN":
        if "num_groups" not in options:
            raise ValueError(f"GN norm config needs 'num_groups', got {cfg!r}")
        layer = layer_class(num_channels=num_features, **options)
    else:
        layer = layer_class(num_features, **options)

    for param in layer.parameters():
        param.requires_grad = requires_grad
    return name, layer
