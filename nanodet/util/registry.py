"""Building a part from a config node by name: the one pattern every registry shares."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def build_from_cfg(cfg: Mapping[str, Any], registry: Mapping[str, Any], kind: str, *args: Any, **extra: Any) -> Any:
    """``registry[cfg.name](*args, **other keys of cfg, **extra)``; ``cfg`` is left unchanged.

    ``kind`` names the config key in errors (``model.arch.backbone``, ``evaluator``...).
    """
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(f"{kind} must be a mapping with a 'name', got {cfg!r}")
    kwargs = copy.deepcopy(dict(cfg))
    name = kwargs.pop("name")
    if name not in registry:
        raise ValueError(f"unknown {kind}.name {name!r}; known: {sorted(registry)}")
    return registry[name](*args, **kwargs, **extra)
