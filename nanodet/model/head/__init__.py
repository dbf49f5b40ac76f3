"""Detection heads, built from a config node by name."""

import copy
from collections.abc import Mapping

from .nanodet_plus_head import NanoDetPlusHead
from .simple_conv_head import SimpleConvHead

HEADS = {
    "NanoDetPlusHead": NanoDetPlusHead,
    "SimpleConvHead": SimpleConvHead,
}


def build_head(cfg):
    """Build the head named by ``cfg["name"]`` with the node's other keys as arguments."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(f"a head config must be a mapping with a 'name', got {cfg!r}")
    kwargs = copy.deepcopy(dict(cfg))
    name = kwargs.pop("name")
    if name not in HEADS:
        raise ValueError(f"unknown head name {name!r}; known heads: {sorted(HEADS)}")
    return HEADS[name](**kwargs)


__all__ = ["HEADS", "NanoDetPlusHead", "SimpleConvHead", "build_head"]
