"""Weight averagers by name: ``build_weight_averager({"name": "ExpMovingAverager", ...}, device)``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ...util.registry import build_from_cfg

from .ema import ExpMovingAverager

WEIGHT_AVERAGERS = {"ExpMovingAverager": ExpMovingAverager}


def build_weight_averager(cfg: Mapping[str, Any], device: torch.device | str | None = "cpu") -> ExpMovingAverager:
    return build_from_cfg(cfg, WEIGHT_AVERAGERS, "model.weight_averager", device=device)
