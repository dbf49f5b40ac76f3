"""Photometric augmentation and normalisation, on BGR float32 images (as upstream).

The image is first scaled to [0, 1]; brightness, contrast and saturation are each applied with
probability 1/2 (Python's ``random``, upstream's draw order), then the image is normalised with
``mean`` and ``std`` given on the 0-255 scale. Values are not clipped after the augmentation,
as upstream.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

import cv2
import numpy as np


def random_brightness(img: np.ndarray, delta: float) -> np.ndarray:
    """Add one offset in [-delta, delta] (image in [0, 1])."""
    return img + random.uniform(-delta, delta)


def random_contrast(img: np.ndarray, alpha_low: float, alpha_up: float) -> np.ndarray:
    """Multiply by one factor in [alpha_low, alpha_up]."""
    return img * random.uniform(alpha_low, alpha_up)


def random_saturation(img: np.ndarray, alpha_low: float, alpha_up: float) -> np.ndarray:
    """Scale the HSV saturation channel by one factor in [alpha_low, alpha_up]."""
    hsv = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2HSV)
    hsv[..., 1] *= random.uniform(alpha_low, alpha_up)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(img - mean) / std per channel, for an image in [0, 1] and mean/std on the 0-255 scale."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1) / 255
    std = np.asarray(std, dtype=np.float32).reshape(1, 1, -1) / 255
    return (img - mean) / std


class ColorTransform:
    """Random brightness / contrast / saturation, then normalisation.

    Args:
        normalize: ``[mean, std]``, each a per-channel (BGR) list on the 0-255 scale.
        brightness: offset range on the [0, 1] scale (None: off).
        contrast: (low, high) multiplicative range (None: off).
        saturation: (low, high) saturation range (None: off).
    """

    def __init__(self, normalize: Sequence[Sequence[float]],
                 brightness: Optional[float] = None,
                 contrast: Optional[Sequence[float]] = None,
                 saturation: Optional[Sequence[float]] = None) -> None:
        self.mean, self.std = normalize
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation

    def __call__(self, meta: dict) -> dict:
        img = meta["img"].astype(np.float32) / 255
        # random.randint is drawn only for the configured terms, as upstream, so that seeded
        # runs draw the same numbers.
        if self.brightness is not None and random.randint(0, 1):
            img = random_brightness(img, self.brightness)
        if self.contrast is not None and random.randint(0, 1):
            img = random_contrast(img, *self.contrast)
        if self.saturation is not None and random.randint(0, 1):
            img = random_saturation(img, *self.saturation)
        meta["img"] = normalize(img, self.mean, self.std).astype(np.float32)
        return meta
