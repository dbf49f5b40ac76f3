"""The random parameters of a batch and the float64 warp matrices they make.

``AugmentSampler`` draws ``ShapeTransform``'s and ``ColorTransform``'s parameters for a whole
batch; the ``*_matrices`` functions are batched torch twins of ``warp.py``'s helpers (which draw
their own random numbers, so they cannot be called here), composed in the same order.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Mapping, Optional, Sequence, Union

import torch

from ..transform.pipeline import RANDOM_KEYS, SHAPE_KEYS

SHAPE_DEFAULTS = dict(divisible=0, perspective=0.0, scale=(1, 1), stretch=((1, 1), (1, 1)),
                      rotation=0.0, shear=0.0, translate=0.0, flip=0.0)


# --------------------------------------------------------------------------- parameters
@dataclasses.dataclass
class AugmentParams:
    """Per-image random parameters of a batch, float64 tensors ``[B]`` on the host.

    ``flip`` and the ``*_on`` flags are bool; angles are in degrees; ``translate_x/y`` are the
    fractions of the width/height where the image centre lands (0.5 +- translate). A colour term
    that is off has its neutral value (brightness 0, contrast 1, saturation 1).
    """

    perspective_x: torch.Tensor
    perspective_y: torch.Tensor
    scale: torch.Tensor
    stretch_x: torch.Tensor
    stretch_y: torch.Tensor
    rotation: torch.Tensor
    shear_x: torch.Tensor
    shear_y: torch.Tensor
    flip: torch.Tensor
    translate_x: torch.Tensor
    translate_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    saturation_on: torch.Tensor

    def __len__(self):
        return self.scale.shape[0]


def _uniform(u, low, high):
    # Python's random.uniform(a, b) is a + (b - a) * random().
    return low + (high - low) * u


class AugmentSampler:
    """Draws ``AugmentParams`` from a pipeline config's ranges (upstream's keys).

    Args:
        pipeline_cfg: the ``pipeline`` node (only its shape and colour keys are read).
        augment: False draws the identity (evaluation), as ``Pipeline(augment=False)``.
    """

    def __init__(self, pipeline_cfg: Mapping, augment: bool = True) -> None:
        cfg = {k: v for k, v in dict(pipeline_cfg).items() if augment or k not in RANDOM_KEYS}
        shape = {**SHAPE_DEFAULTS, **{k: cfg[k] for k in SHAPE_KEYS if k in cfg}}
        self.divisible = shape["divisible"]
        self.perspective = float(shape["perspective"])
        self.scale = tuple(float(v) for v in shape["scale"])
        self.stretch = tuple(tuple(float(v) for v in r) for r in shape["stretch"])
        self.rotation = float(shape["rotation"])
        self.shear = float(shape["shear"])
        self.translate = float(shape["translate"])
        self.flip = float(shape["flip"])
        self.brightness = cfg.get("brightness")
        self.contrast = cfg.get("contrast")
        self.saturation = cfg.get("saturation")

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Vectorised draw for a batch (torch's generator; same distributions as the CPU's)."""
        u = torch.rand(batch_size, 17, generator=generator, dtype=torch.float64)
        p, (sw, sh) = self.perspective, self.stretch
        col = iter(u.unbind(1))
        params = dict(
            perspective_x=_uniform(next(col), -p, p),
            perspective_y=_uniform(next(col), -p, p),
            scale=_uniform(next(col), *self.scale),
            stretch_x=_uniform(next(col), *sw),
            stretch_y=_uniform(next(col), *sh),
            rotation=_uniform(next(col), -self.rotation, self.rotation),
            shear_x=_uniform(next(col), -self.shear, self.shear),
            shear_y=_uniform(next(col), -self.shear, self.shear),
            flip=next(col) < self.flip,
            translate_x=_uniform(next(col), 0.5 - self.translate, 0.5 + self.translate),
            translate_y=_uniform(next(col), 0.5 - self.translate, 0.5 + self.translate),
        )
        zeros, ones = torch.zeros(batch_size, dtype=torch.float64), torch.ones(batch_size, dtype=torch.float64)
        params["brightness"], params["contrast"] = zeros, ones
        params["saturation"], params["saturation_on"] = ones, torch.zeros(batch_size, dtype=torch.bool)
        if self.brightness is not None:
            on = next(col) < 0.5
            params["brightness"] = torch.where(on, _uniform(next(col), -self.brightness, self.brightness), 0.0)
        else:
            next(col), next(col)
        if self.contrast is not None:
            on = next(col) < 0.5
            params["contrast"] = torch.where(on, _uniform(next(col), *self.contrast), 1.0)
        else:
            next(col), next(col)
        if self.saturation is not None:
            params["saturation_on"] = next(col) < 0.5
            params["saturation"] = torch.where(params["saturation_on"],
                                               _uniform(next(col), *self.saturation), 1.0)
        return AugmentParams(**params)

    def sample_like_cpu(self, batch_size: int, rnd: random.Random = random) -> AugmentParams:
        """Draw image after image from Python's ``random`` (or ``rnd``) in the CPU pipeline's
        order (``ShapeTransform.random_matrix`` then ``ColorTransform``), so that after the same
        seed the parameters are the CPU pipeline's. For tests and exact reproduction."""
        rows = []
        for _ in range(batch_size):
            p, (sw, sh) = self.perspective, self.stretch
            row = dict(
                perspective_x=rnd.uniform(-p, p), perspective_y=rnd.uniform(-p, p),
                scale=rnd.uniform(*self.scale),
                stretch_x=rnd.uniform(*sw), stretch_y=rnd.uniform(*sh),
                rotation=rnd.uniform(-self.rotation, self.rotation),
                shear_x=rnd.uniform(-self.shear, self.shear),
                shear_y=rnd.uniform(-self.shear, self.shear),
                flip=rnd.random() < self.flip,
                translate_x=rnd.uniform(0.5 - self.translate, 0.5 + self.translate),
                translate_y=rnd.uniform(0.5 - self.translate, 0.5 + self.translate),
                brightness=0.0, contrast=1.0, saturation=1.0, saturation_on=False,
            )
            if self.brightness is not None and rnd.randint(0, 1):
                row["brightness"] = rnd.uniform(-self.brightness, self.brightness)
            if self.contrast is not None and rnd.randint(0, 1):
                row["contrast"] = rnd.uniform(*self.contrast)
            if self.saturation is not None and rnd.randint(0, 1):
                row["saturation"], row["saturation_on"] = rnd.uniform(*self.saturation), True
            rows.append(row)
        return AugmentParams(**{
            f.name: torch.tensor([r[f.name] for r in rows],
                                 dtype=torch.bool if f.name in ("flip", "saturation_on") else torch.float64)
            for f in dataclasses.fields(AugmentParams)
        })


# --------------------------------------------------------------------------- matrices
# Batched float64 twins of warp.py's helpers: [B] parameters -> [B, 3, 3].
Sizes = Union[torch.Tensor, Sequence[float]]  # one width or height per image
def identity_matrices(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def center_matrices(widths: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    m = identity_matrices(len(widths))
    m[:, 0, 2], m[:, 1, 2] = -widths / 2, -heights / 2
    return m


def perspective_matrices(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    m = identity_matrices(len(px))
    m[:, 2, 0], m[:, 2, 1] = px, py
    return m


def scale_matrices(scale: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(torch.stack([scale, scale, torch.ones_like(scale)], dim=1))


def stretch_matrices(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(torch.stack([sx, sy, torch.ones_like(sx)], dim=1))


def rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    """As ``cv2.getRotationMatrix2D(center=(0, 0), angle, scale=1)``."""
    angle = degrees * (math.pi / 180)
    alpha, beta = torch.cos(angle), torch.sin(angle)
    m = identity_matrices(len(degrees))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = alpha, beta, -beta, alpha
    return m


def shear_matrices(degrees_x: torch.Tensor, degrees_y: torch.Tensor) -> torch.Tensor:
    m = identity_matrices(len(degrees_x))
    # x * (pi / 180) is math.radians' own arithmetic.
    m[:, 0, 1] = torch.tan(degrees_x * (math.pi / 180))
    m[:, 1, 0] = torch.tan(degrees_y * (math.pi / 180))
    return m


def flip_matrices(flip: torch.Tensor) -> torch.Tensor:
    m = identity_matrices(len(flip))
    m[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    return m


def translate_matrices(tx: torch.Tensor, ty: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    m = identity_matrices(len(tx))
    m[:, 0, 2], m[:, 1, 2] = tx * widths, ty * heights
    return m


def resize_matrices(raw_w: torch.Tensor, raw_h: torch.Tensor, dst_w: torch.Tensor, dst_h: torch.Tensor,
                    keep_ratio: bool) -> torch.Tensor:
    """``get_resize_matrix`` for a batch of (raw, dst) sizes."""
    if not keep_ratio:
        return torch.diag_embed(torch.stack([dst_w / raw_w, dst_h / raw_h, torch.ones_like(raw_w)], 1))
    ratio = torch.minimum(dst_w / raw_w, dst_h / raw_h)
    center = center_matrices(raw_w, raw_h)
    recenter = identity_matrices(len(raw_w))
    recenter[:, 0, 2], recenter[:, 1, 2] = dst_w / 2, dst_h / 2
    return recenter @ scale_matrices(ratio) @ center


def random_matrices(params: AugmentParams, widths: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    """``ShapeTransform.random_matrix`` for a batch (same composition order)."""
    m = center_matrices(widths, heights)
    m = perspective_matrices(params.perspective_x, params.perspective_y) @ m
    m = scale_matrices(params.scale) @ m
    m = stretch_matrices(params.stretch_x, params.stretch_y) @ m
    m = rotation_matrices(params.rotation) @ m
    m = shear_matrices(params.shear_x, params.shear_y) @ m
    m = flip_matrices(params.flip) @ m
    return translate_matrices(params.translate_x, params.translate_y, widths, heights) @ m


def warp_matrices(params: AugmentParams, raw_w: Sizes, raw_h: Sizes, dst_w: Sizes, dst_h: Sizes,
                  keep_ratio: bool) -> torch.Tensor:
    """The full float64 warp (resize after augmentation) of each image, as ``ShapeTransform``."""
    raw_w, raw_h, dst_w, dst_h = (torch.as_tensor(v, dtype=torch.float64) for v in (raw_w, raw_h, dst_w, dst_h))
    return resize_matrices(raw_w, raw_h, dst_w, dst_h, keep_ratio) @ random_matrices(params, raw_w, raw_h)


def warp_boxes_batched(boxes: torch.Tensor, matrices: torch.Tensor, widths: Sizes, heights: Sizes) -> torch.Tensor:
    """``warp_boxes`` for padded boxes ``[B, N, 4]`` (float64 matrices ``[B, 3, 3]``, per-image
    clip sizes ``[B]``): corners through the matrix, enclosing box, clip. Returns float32."""
    boxes = boxes.to(torch.float64)
    corners = boxes[..., [0, 1, 2, 3, 0, 3, 2, 1]].reshape(boxes.shape[0], -1, 2)
    corners = torch.cat([corners, torch.ones_like(corners[..., :1])], dim=-1) @ matrices.transpose(1, 2)
    xy = (corners[..., :2] / corners[..., 2:3]).reshape(boxes.shape[0], -1, 4, 2)
    lo, hi = xy.min(dim=2).values, xy.max(dim=2).values
    limit = torch.stack([torch.as_tensor(widths, dtype=torch.float64),
                         torch.as_tensor(heights, dtype=torch.float64)], dim=1)[:, None, :]
    lo = torch.minimum(lo.clamp(min=0), limit)
    hi = torch.minimum(hi.clamp(min=0), limit)
    return torch.cat([lo, hi], dim=-1).to(torch.float32)
