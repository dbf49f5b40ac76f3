"""Necks by name: ``build_fpn({"name": "GhostPAN", ...})``."""

import copy

from .ghost_pan import GhostPAN

FPNS = {"GhostPAN": GhostPAN}


def build_fpn(cfg):
    """Instantiate the neck named by ``cfg.name`` with the other keys as arguments."""
    options = dict(copy.deepcopy(cfg))
    name = options.pop("name", None)
    if name not in FPNS:
        raise ValueError(f"unknown fpn name {name!r}; known: {sorted(FPNS)}")
    return FPNS[name](**options)
