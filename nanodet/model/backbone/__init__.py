"""Backbones by name: ``build_backbone({"name": "ShuffleNetV2", ...})``."""

from ...util.registry import build_from_cfg

from .mobilenetv2 import MobileNetV2
from .shufflenetv2 import ShuffleNetV2

BACKBONES = {"ShuffleNetV2": ShuffleNetV2, "MobileNetV2": MobileNetV2}


def build_backbone(cfg):
    """Instantiate the backbone named by ``cfg.name`` with the other keys as arguments."""
    return build_from_cfg(cfg, BACKBONES, "backbone")
