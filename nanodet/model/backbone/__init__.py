"""Backbones by name: ``build_backbone({"name": "ShuffleNetV2", ...})``."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from ...util.registry import build_from_cfg

from .mobilenetv2 import MobileNetV2
from .shufflenetv2 import ShuffleNetV2

BACKBONES = {"ShuffleNetV2": ShuffleNetV2, "MobileNetV2": MobileNetV2}


def build_backbone(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate the backbone named by ``cfg.name`` with the other keys as arguments."""
    return build_from_cfg(cfg, BACKBONES, "backbone")


def check_pretrained_weights(cfg: Mapping[str, Any]) -> None:
    """Load the backbone's pretrained weights once, so that a missing or wrong file is reported
    before a run reads any data; the random state is left as it was (the model built later gets
    the same initial weights)."""
    if not cfg.get("pretrain"):
        return
    with torch.random.fork_rng(devices=[]):
        build_backbone(cfg)
