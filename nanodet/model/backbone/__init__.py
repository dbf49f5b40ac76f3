"""Backbones by name: ``build_backbone({"name": "ShuffleNetV2", ...})``."""

import copy

from .mobilenetv2 import MobileNetV2
from .shufflenetv2 import ShuffleNetV2

BACKBONES = {"ShuffleNetV2": ShuffleNetV2, "MobileNetV2": MobileNetV2}


def build_backbone(cfg):
    """Instantiate the backbone named by ``cfg.name`` with the other keys as arguments."""
    options = dict(copy.deepcopy(cfg))
    name = options.pop("name", None)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone name {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](**options)
