"""Geometric augmentation and resizing as one 3x3 warp matrix (upstream's ShapeTransform).

Every random transform (perspective, scale, stretch, rotation, shear, flip, translate) and the
final resize to the network input are composed into a single matrix, so the image is resampled
once by ``cv2.warpPerspective`` and the boxes are mapped by the same matrix. The matrix is kept in
``meta["warp_matrix"]`` so predictions can be mapped back with its inverse.

Composition order (applied to source pixel coordinates, right to left):
``Resize @ Translate @ Flip @ Shear @ Rotation @ Stretch @ Scale @ Perspective @ Center``.
Centering first makes scale, rotation and flip act about the image centre; the translate step
puts the centre back (at 0.5 +- ``translate`` of the width/height).

Random numbers come from Python's ``random`` module, drawn in upstream's order, so that a
DataLoader worker seed reproduces the same augmentation.
"""

from __future__ import annotations

import math
import random
from typing import Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from nanodet.util.box_transform import warp_boxes


def get_flip_matrix(prob: float = 0.5) -> np.ndarray:
    """Horizontal flip (about the origin, i.e. the centred image) with probability ``prob``."""
    flip = np.eye(3)
    if random.random() < prob:
        flip[0, 0] = -1
    return flip


def get_perspective_matrix(perspective: float = 0.0) -> np.ndarray:
    persp = np.eye(3)
    persp[2, 0] = random.uniform(-perspective, perspective)
    persp[2, 1] = random.uniform(-perspective, perspective)
    return persp


def get_rotation_matrix(degree: float = 0.0) -> np.ndarray:
    rot = np.eye(3)
    angle = random.uniform(-degree, degree)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=1)
    return rot


def get_scale_matrix(ratio: Sequence[float] = (1, 1)) -> np.ndarray:
    scale = random.uniform(*ratio)
    return np.diag([scale, scale, 1.0])


def get_stretch_matrix(width_ratio: Sequence[float] = (1, 1),
                       height_ratio: Sequence[float] = (1, 1)) -> np.ndarray:
    sx = random.uniform(*width_ratio)
    sy = random.uniform(*height_ratio)
    return np.diag([sx, sy, 1.0])


def get_shear_matrix(degree: float = 0.0) -> np.ndarray:
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(random.uniform(-degree, degree)))
    shear[1, 0] = math.tan(math.radians(random.uniform(-degree, degree)))
    return shear


def get_translate_matrix(translate: float, width: int, height: int) -> np.ndarray:
    """Move the (centred) image to a random point around the middle of the output.

    ``translate`` is a fraction of the image size; 0 puts the centre back in the middle.
    """
    trans = np.eye(3)
    trans[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * width
    trans[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * height
    return trans


def get_resize_matrix(raw_shape: Tuple[int, int], dst_shape: Tuple[int, int],
                      keep_ratio: bool) -> np.ndarray:
    """Matrix resizing a (width, height) image to ``dst_shape`` (width, height).

    With ``keep_ratio`` the image is scaled uniformly to fit inside ``dst_shape`` and centred
    in it; otherwise each axis is scaled independently to fill it.
    """
    raw_w, raw_h = raw_shape
    dst_w, dst_h = dst_shape
    if not keep_ratio:
        return np.diag([dst_w / raw_w, dst_h / raw_h, 1.0])
    ratio = min(dst_w / raw_w, dst_h / raw_h)
    center = np.array([[1, 0, -raw_w / 2], [0, 1, -raw_h / 2], [0, 0, 1]], dtype=np.float64)
    scale = np.diag([ratio, ratio, 1.0])
    recenter = np.array([[1, 0, dst_w / 2], [0, 1, dst_h / 2], [0, 0, 1]], dtype=np.float64)
    return recenter @ scale @ center


def get_minimum_dst_shape(src_shape: Tuple[int, int], dst_shape: Tuple[int, int],
                          divisible: Optional[int] = None) -> Tuple[int, int]:
    """Smallest (width, height) that holds the keep-ratio resize of ``src_shape`` in ``dst_shape``.

    With keep_ratio upstream does not letterbox to the full input size: a 4:3 image at 320x320
    becomes 320x240, and the batch is padded later (``stack_batch_img``). ``divisible`` rounds
    each side up to a multiple of it.
    """
    src_w, src_h = src_shape
    ratio = min(dst_shape[0] / src_w, dst_shape[1] / src_h)
    dst_w, dst_h = int(ratio * src_w), int(ratio * src_h)
    if divisible and divisible > 0:
        dst_w = max(divisible, -(-dst_w // divisible) * divisible)
        dst_h = max(divisible, -(-dst_h // divisible) * divisible)
    return dst_w, dst_h


class ShapeTransform:
    """Random geometric augmentation plus resize, as one warp matrix.

    Args:
        keep_ratio: keep the aspect ratio when resizing to the input size.
        divisible: round the keep-ratio output size up to a multiple of this (0: no rounding).
        perspective: perspective factor; each term drawn in [-perspective, perspective].
        scale: (low, high) uniform scale range.
        stretch: ((w_low, w_high), (h_low, h_high)) per-axis scale ranges.
        rotation: rotation drawn in [-rotation, rotation] degrees.
        shear: shear drawn in [-shear, shear] degrees, on each axis.
        translate: centre moved by up to this fraction of the image size.
        flip: probability of a horizontal flip.
    """

    def __init__(self, keep_ratio: bool, divisible: int = 0, perspective: float = 0.0,
                 scale: Sequence[float] = (1, 1),
                 stretch: Sequence[Sequence[float]] = ((1, 1), (1, 1)),
                 rotation: float = 0.0, shear: float = 0.0, translate: float = 0.0,
                 flip: float = 0.0) -> None:
        self.keep_ratio = keep_ratio
        self.divisible = divisible
        self.perspective = perspective
        self.scale_ratio = scale
        self.stretch_ratio = stretch
        self.rotation_degree = rotation
        self.shear_degree = shear
        self.translate_ratio = translate
        self.flip_prob = flip

    def random_matrix(self, width: int, height: int) -> np.ndarray:
        """The augmentation part of the warp (before the resize), for a width x height image."""
        matrix = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]], dtype=np.float64)
        # Draw order (and hence the random stream) as upstream; do not reorder.
        matrix = get_perspective_matrix(self.perspective) @ matrix
        matrix = get_scale_matrix(self.scale_ratio) @ matrix
        matrix = get_stretch_matrix(*self.stretch_ratio) @ matrix
        matrix = get_rotation_matrix(self.rotation_degree) @ matrix
        matrix = get_shear_matrix(self.shear_degree) @ matrix
        matrix = get_flip_matrix(self.flip_prob) @ matrix
        return get_translate_matrix(self.translate_ratio, width, height) @ matrix

    def __call__(self, meta: dict, dst_shape: Tuple[int, int]) -> dict:
        img = meta["img"]
        height, width = img.shape[:2]
        if self.keep_ratio:
            dst_shape = get_minimum_dst_shape((width, height), dst_shape, self.divisible)
        dst_shape = (int(dst_shape[0]), int(dst_shape[1]))
        matrix = get_resize_matrix((width, height), dst_shape, self.keep_ratio)
        return apply_warp(meta, matrix @ self.random_matrix(width, height), dst_shape)


def apply_warp(meta: dict, matrix: np.ndarray, dst_shape: Tuple[int, int]) -> dict:
    """Warp ``meta["img"]`` into a ``dst_shape`` (width, height) image by ``matrix``, map its
    ``gt_bboxes`` (and ``gt_bboxes_ignore``) alike and keep the matrix in ``meta["warp_matrix"]``."""
    # Stored as float32; apply exactly the stored matrix so that image, boxes and the
    # inverse used on predictions all agree.
    meta["warp_matrix"] = matrix.astype(np.float32)
    matrix = meta["warp_matrix"].astype(np.float64)

    meta["img"] = cv2.warpPerspective(meta["img"], matrix, dsize=dst_shape)
    for key in ("gt_bboxes", "gt_bboxes_ignore"):
        if key in meta:
            meta[key] = warp_boxes(meta[key], matrix, dst_shape[0], dst_shape[1])
    return meta


# warp_and_resize's keys: ShapeTransform's random transforms.
WARP_KEYS = ("perspective", "scale", "stretch", "rotation", "shear", "translate", "flip")


def warp_and_resize(meta: dict, warp_kwargs: Mapping, dst_shape: Tuple[int, int], keep_ratio: bool = True) -> dict:
    """Upstream's ``warp_and_resize``: the random warp of ``warp_kwargs`` (``ShapeTransform``'s
    arguments: perspective, scale, stretch, rotation, shear, translate, flip), then a resize into
    exactly ``dst_shape`` (width, height), letterboxed and centred with ``keep_ratio``.

    Updates ``meta["img"]``, ``meta["warp_matrix"]`` and ``meta["gt_bboxes"]`` (and
    ``gt_bboxes_ignore``) in place and returns ``meta``. Unlike the pipeline (which, as upstream's,
    shrinks a keep-ratio output to the image's own aspect), the output is always ``dst_shape``.
    """
    from .pipeline import COLOR_KEYS  # here: the pipeline module imports this one

    # A pipeline node's colour keys are left to the colour step, so a whole node can be passed.
    unknown = sorted(set(warp_kwargs) - set(WARP_KEYS) - set(COLOR_KEYS))
    if unknown:
        raise ValueError(f"warp_and_resize: unknown warp_kwargs {unknown}; valid: {list(WARP_KEYS)} "
                         f"(and the colour keys {list(COLOR_KEYS)}, ignored here)")
    shape_transform = ShapeTransform(keep_ratio, **{k: warp_kwargs[k] for k in WARP_KEYS if k in warp_kwargs})
    height, width = meta["img"].shape[:2]
    dst_shape = (int(dst_shape[0]), int(dst_shape[1]))
    matrix = get_resize_matrix((width, height), dst_shape, keep_ratio) @ shape_transform.random_matrix(width, height)
    return apply_warp(meta, matrix, dst_shape)
