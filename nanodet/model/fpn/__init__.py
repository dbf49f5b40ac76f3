"""Necks by name: ``build_fpn({"name": "GhostPAN", ...})``."""

from ...util.registry import build_from_cfg

from .ghost_pan import GhostPAN

FPNS = {"GhostPAN": GhostPAN}


def build_fpn(cfg):
    """Instantiate the neck named by ``cfg.name`` with the other keys as arguments."""
    return build_from_cfg(cfg, FPNS, "fpn")
