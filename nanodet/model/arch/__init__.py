"""Detector architectures, built from the config's ``model`` node."""

import copy
from collections.abc import Mapping

from .nanodet_plus import NanoDetPlus
from .one_stage_detector import OneStageDetector

ARCHS = {
    "NanoDetPlus": NanoDetPlus,
    "OneStageDetector": OneStageDetector,
}


def build_model(model_cfg):
    """Build ``model_cfg.arch`` by its name. The weight averager (``model_cfg.weight_averager``)
    is the trainer's business, not built here."""
    arch = model_cfg.get("arch") if isinstance(model_cfg, Mapping) else None
    if not isinstance(arch, Mapping) or "name" not in arch:
        raise ValueError(f"model.arch must be a mapping with a 'name', got {arch!r}")
    kwargs = copy.deepcopy(dict(arch))
    name = kwargs.pop("name")
    if name not in ARCHS:
        raise ValueError(f"unknown model.arch.name {name!r}; known: {sorted(ARCHS)}")
    return ARCHS[name](**kwargs)


__all__ = ["ARCHS", "NanoDetPlus", "OneStageDetector", "build_model"]
