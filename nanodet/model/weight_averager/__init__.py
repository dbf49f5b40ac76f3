"""Weight averagers by name: ``build_weight_averager({"name": "ExpMovingAverager", ...}, device)``."""

from ...util.registry import build_from_cfg

from .ema import ExpMovingAverager

WEIGHT_AVERAGERS = {"ExpMovingAverager": ExpMovingAverager}


def build_weight_averager(cfg, device="cpu"):
    return build_from_cfg(cfg, WEIGHT_AVERAGERS, "model.weight_averager", device=device)
