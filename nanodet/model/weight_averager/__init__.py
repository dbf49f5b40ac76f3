"""Weight averagers by name: ``build_weight_averager({"name": "ExpMovingAverager", ...}, device)``."""

import copy

from .ema import ExpMovingAverager

WEIGHT_AVERAGERS = {"ExpMovingAverager": ExpMovingAverager}


def build_weight_averager(cfg, device="cpu"):
    options = dict(copy.deepcopy(cfg))
    name = options.pop("name", None)
    if name not in WEIGHT_AVERAGERS:
        raise ValueError(f"unknown weight averager name {name!r}; known: {sorted(WEIGHT_AVERAGERS)}")
    return WEIGHT_AVERAGERS[name](**options, device=device)
