"""The data pipeline: geometric warp + resize, then colour augmentation + normalisation."""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

from .color import ColorTransform
from .warp import ShapeTransform

SHAPE_KEYS = ("divisible", "perspective", "scale", "stretch", "rotation", "shear", "translate",
              "flip")
COLOR_KEYS = ("brightness", "contrast", "saturation", "normalize")
# Every key a config's ``pipeline`` node may hold (upstream's names); the config checker reads it.
PIPELINE_KEYS = SHAPE_KEYS + COLOR_KEYS
# Keys that only describe random augmentation: dropped when a pipeline is built for evaluation.
RANDOM_KEYS = ("perspective", "scale", "stretch", "rotation", "shear", "translate", "flip",
               "brightness", "contrast", "saturation")


class Pipeline:
    """Apply a config's ``pipeline`` node to a meta dict.

    Args:
        cfg: mapping with upstream's pipeline keys (see ``PIPELINE_KEYS``); ``normalize``
            (``[mean, std]``, BGR, 0-255 scale) is required.
        keep_ratio: keep the aspect ratio when resizing to the input size.
        augment: False keeps only the resize and normalisation (evaluation); the random keys of
            ``cfg`` are then ignored.
    """

    def __init__(self, cfg: Mapping, keep_ratio: bool, augment: bool = True) -> None:
        unknown = sorted(set(cfg) - set(PIPELINE_KEYS))
        if unknown:
            raise ValueError(f"unknown pipeline keys {unknown}; valid keys: {list(PIPELINE_KEYS)}")
        if "normalize" not in cfg:
            raise ValueError("pipeline needs 'normalize: [[mean_b, mean_g, mean_r], "
                             "[std_b, std_g, std_r]]'")
        if not augment:
            cfg = {k: v for k, v in cfg.items() if k not in RANDOM_KEYS}
        self.shape_transform = ShapeTransform(keep_ratio, **{k: cfg[k] for k in SHAPE_KEYS
                                                             if k in cfg})
        self.color = ColorTransform(**{k: cfg[k] for k in COLOR_KEYS if k in cfg})

    def __call__(self, dataset: Optional[object], meta: dict, dst_shape: Tuple[int, int]) -> dict:
        # ``dataset`` is unused; kept for upstream's call signature (mosaic would need it).
        meta = self.shape_transform(meta, dst_shape=dst_shape)
        return self.color(meta)
