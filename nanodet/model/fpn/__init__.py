"""Necks by name: ``build_fpn({"name": "GhostPAN", ...})``."""

from __future__ import annotations

from typing import Any, Mapping

from ...util.registry import build_from_cfg

from .ghost_pan import GhostPAN

FPNS = {"GhostPAN": GhostPAN}


def build_fpn(cfg: Mapping[str, Any]) -> GhostPAN:
    """Instantiate the neck named by ``cfg.name`` with the other keys as arguments."""
    return build_from_cfg(cfg, FPNS, "fpn")
