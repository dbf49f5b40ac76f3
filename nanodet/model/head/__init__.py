"""Detection heads, built from a config node by name."""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from ...util.registry import build_from_cfg

from .nanodet_plus_head import NanoDetPlusHead
from .simple_conv_head import SimpleConvHead

HEADS = {
    "NanoDetPlusHead": NanoDetPlusHead,
    "SimpleConvHead": SimpleConvHead,
}


def build_head(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the head named by ``cfg["name"]`` with the node's other keys as arguments."""
    return build_from_cfg(cfg, HEADS, "head")


__all__ = ["HEADS", "NanoDetPlusHead", "SimpleConvHead", "build_head"]
