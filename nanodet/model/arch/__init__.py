"""Detector architectures, built from the config's ``model`` node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...util.registry import build_from_cfg

from .nanodet_plus import NanoDetPlus
from .one_stage_detector import OneStageDetector

ARCHS = {
    "NanoDetPlus": NanoDetPlus,
    "OneStageDetector": OneStageDetector,
}


def build_model(model_cfg: Mapping[str, Any]) -> OneStageDetector:
    """Build ``model_cfg.arch`` by its name. The weight averager (``model_cfg.weight_averager``)
    is the trainer's business, not built here."""
    arch = model_cfg.get("arch") if isinstance(model_cfg, Mapping) else None
    return build_from_cfg(arch, ARCHS, "model.arch")


__all__ = ["ARCHS", "NanoDetPlus", "OneStageDetector", "build_model"]
