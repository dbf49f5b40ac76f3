"""Batch augmentation on the device: the CPU pipeline's warp and colour, for a whole batch at once.

The CPU pipeline (``nanodet.data.transform``) decodes a JPEG, warps it with OpenCV and applies the
colour terms, image by image in DataLoader workers. Here the images are decoded once into memory
(``DecodedImageCache``: uint8, resized so they fit the input size, optionally on the GPU) and every
batch is augmented on the device:

* the parameters are drawn for the whole batch (``AugmentSampler.sample``: the same ranges and
  probabilities as ``ShapeTransform`` and ``ColorTransform``; ``AugmentSampler.sample_like_cpu``
  draws them from Python's ``random`` in the CPU pipeline's order, so a seeded run reproduces
  the CPU pipeline's matrices, boxes and, up to OpenCV's fixed-point rounding, pixels);
* the warp matrices are composed in float64 exactly as ``warp.py`` composes them
  (``Resize @ Translate @ Flip @ Shear @ Rotation @ Stretch @ Scale @ Perspective @ Center``),
  stored as float32 and applied as float64, as the CPU path does. ``warp.py``'s helpers draw
  their own random numbers, so batched torch twins of them live here (tested against them);
* the images are resampled with one ``grid_sample`` (bilinear, zero border: OpenCV's
  ``warpPerspective`` defaults), rounded to integers as OpenCV's uint8 output is;
* the boxes go through the same matrix (corners, enclosing box, clip to the image), on the host:
  they are tiny and their counts live there anyway. Degenerate boxes are kept, as the CPU path
  keeps them (``warp_boxes`` clips only);
* brightness, contrast and saturation act in the same BGR float space, order and probability as
  ``color.py``; the saturation term is OpenCV's float HSV round trip written in closed form
  (``v - a * v / (|v| + eps) * (v - c)`` per channel, ``v`` the channel maximum);
* the batch is laid out as the CPU collate (``collate_and_pad``) lays it out: each image at the
  top left of a canvas padded to a multiple of 32, zero (after normalisation) outside it.

All host work per batch is O(batch) vectorised torch on small tensors plus one host-to-device
copy (per-image parameters and the padded GT); nothing waits for the device.

Not supported (a clear error, not a silent difference): ``multi_scale`` (a per-sample random
input size). Zooming in (scale > 1) resamples the cached image, which was already shrunk to the
input size, so images larger than the input lose some detail the CPU path keeps.
"""

from __future__ import annotations

import dataclasses
import math
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..util.gt_batch import pack_rows, pad_rows, to_device, unpack_rows
from .transform.pipeline import RANDOM_KEYS, SHAPE_KEYS
from .transform.warp import get_minimum_dst_shape

# OpenCV's float HSV conversion divides by |v| + FLT_EPSILON.
FLT_EPSILON = 1.1920928955078125e-07
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

    def __init__(self, pipeline_cfg: Mapping, augment: bool = True):
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

    def sample_like_cpu(self, batch_size: int, rnd=random) -> AugmentParams:
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
def _eye(n):
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def center_matrices(widths, heights):
    m = _eye(len(widths))
    m[:, 0, 2], m[:, 1, 2] = -widths / 2, -heights / 2
    return m


def perspective_matrices(px, py):
    m = _eye(len(px))
    m[:, 2, 0], m[:, 2, 1] = px, py
    return m


def scale_matrices(scale):
    return torch.diag_embed(torch.stack([scale, scale, torch.ones_like(scale)], dim=1))


def stretch_matrices(sx, sy):
    return torch.diag_embed(torch.stack([sx, sy, torch.ones_like(sx)], dim=1))


def rotation_matrices(degrees):
    """As ``cv2.getRotationMatrix2D(center=(0, 0), angle, scale=1)``."""
    angle = degrees * (math.pi / 180)
    alpha, beta = torch.cos(angle), torch.sin(angle)
    m = _eye(len(degrees))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = alpha, beta, -beta, alpha
    return m


def shear_matrices(degrees_x, degrees_y):
    m = _eye(len(degrees_x))
    # x * (pi / 180) is math.radians' own arithmetic.
    m[:, 0, 1] = torch.tan(degrees_x * (math.pi / 180))
    m[:, 1, 0] = torch.tan(degrees_y * (math.pi / 180))
    return m


def flip_matrices(flip):
    m = _eye(len(flip))
    m[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    return m


def translate_matrices(tx, ty, widths, heights):
    m = _eye(len(tx))
    m[:, 0, 2], m[:, 1, 2] = tx * widths, ty * heights
    return m


def resize_matrices(raw_w, raw_h, dst_w, dst_h, keep_ratio: bool):
    """``get_resize_matrix`` for a batch of (raw, dst) sizes."""
    if not keep_ratio:
        return torch.diag_embed(torch.stack([dst_w / raw_w, dst_h / raw_h, torch.ones_like(raw_w)], 1))
    ratio = torch.minimum(dst_w / raw_w, dst_h / raw_h)
    center = center_matrices(raw_w, raw_h)
    recenter = _eye(len(raw_w))
    recenter[:, 0, 2], recenter[:, 1, 2] = dst_w / 2, dst_h / 2
    return recenter @ scale_matrices(ratio) @ center


def random_matrices(params: AugmentParams, widths, heights):
    """``ShapeTransform.random_matrix`` for a batch (same composition order)."""
    m = center_matrices(widths, heights)
    m = perspective_matrices(params.perspective_x, params.perspective_y) @ m
    m = scale_matrices(params.scale) @ m
    m = stretch_matrices(params.stretch_x, params.stretch_y) @ m
    m = rotation_matrices(params.rotation) @ m
    m = shear_matrices(params.shear_x, params.shear_y) @ m
    m = flip_matrices(params.flip) @ m
    return translate_matrices(params.translate_x, params.translate_y, widths, heights) @ m


def warp_matrices(params: AugmentParams, raw_w, raw_h, dst_w, dst_h, keep_ratio: bool):
    """The full float64 warp (resize after augmentation) of each image, as ``ShapeTransform``."""
    raw_w, raw_h, dst_w, dst_h = (torch.as_tensor(v, dtype=torch.float64) for v in (raw_w, raw_h, dst_w, dst_h))
    return resize_matrices(raw_w, raw_h, dst_w, dst_h, keep_ratio) @ random_matrices(params, raw_w, raw_h)


def warp_boxes_batched(boxes, matrices, widths, heights):
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


# --------------------------------------------------------------------------- colour
def adjust_saturation_bgr(img, factor):
    """Scale the HSV saturation of BGR float images ``[B, 3, H, W]`` by ``factor`` ([B, 1, 1, 1]):
    OpenCV's float BGR->HSV, ``S *= factor``, HSV->BGR, in closed form. With ``v`` the channel
    maximum, OpenCV's round trip gives ``v - factor * v / (|v| + eps) * (v - c)`` for every
    channel ``c`` (also for values outside [0, 1], which brightness and contrast can produce)."""
    v = img.amax(dim=1, keepdim=True)
    return v - factor * (v / (v.abs() + FLT_EPSILON)) * (v - img)


# --------------------------------------------------------------------------- the batch
def _sizes(values, batch_size, default):
    if values is None:
        return torch.tensor([default] * batch_size, dtype=torch.float64)
    return torch.as_tensor(np.asarray(values), dtype=torch.float64).reshape(batch_size, 2)


class GpuBatchAugment:
    """Augment a batch of uint8 images and their boxes on ``device``.

    Args:
        pipeline_cfg: the dataset's ``pipeline`` node (upstream's keys; ``normalize`` required).
        input_size: network input (width, height).
        keep_ratio: keep the aspect ratio when resizing, as the dataset's option.
        device: where the images are warped and coloured.
        augment: False keeps only the resize and normalisation (evaluation).
        pad_divisible: the batch canvas is a multiple of this (``collate_and_pad``'s 32).
        channels_last: return ``img`` in channels-last memory format.
    """

    def __init__(self, pipeline_cfg: Mapping, input_size: Sequence[int], keep_ratio: bool = True,
                 device="cuda", augment: bool = True, pad_divisible: int = 32,
                 channels_last: bool = False):
        if "normalize" not in pipeline_cfg:
            raise ValueError("GpuBatchAugment: the pipeline needs 'normalize: [mean, std]'")
        self.sampler = AugmentSampler(pipeline_cfg, augment=augment)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keep_ratio = keep_ratio
        self.device = torch.device(device)
        self.pad_divisible = pad_divisible
        self.channels_last = channels_last
        mean, std = pipeline_cfg["normalize"]
        # The CPU path's float32 constants: mean / 255 and std / 255.
        self.mean = (torch.tensor(mean, dtype=torch.float32) / 255).reshape(1, 3, 1, 1).to(self.device)
        self.std = (torch.tensor(std, dtype=torch.float32) / 255).reshape(1, 3, 1, 1).to(self.device)

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None) -> AugmentParams:
        return self.sampler.sample(batch_size, generator)

    def dst_sizes(self, raw_w, raw_h):
        """Each image's output (width, height), as ``ShapeTransform``: the keep-ratio fit (rounded
        up to ``divisible``) or the input size."""
        if not self.keep_ratio:
            return [self.input_size] * len(raw_w)
        return [get_minimum_dst_shape((w, h), self.input_size, self.sampler.divisible)
                for w, h in zip(raw_w.tolist(), raw_h.tolist())]

    def __call__(self, images, boxes, labels, image_sizes=None, original_sizes=None,
                 gt_bboxes_ignore=None, img_info=None, params: Optional[AugmentParams] = None,
                 generator: Optional[torch.Generator] = None) -> dict:
        """Augment one batch.

        Args:
            images: uint8 BGR ``[B, H, W, 3]`` (a tensor, on any device) or a list of HWC arrays
                (of any sizes: they are padded, and their sizes are the default ``image_sizes``).
            boxes, labels: per-image xyxy boxes ``[N_i, 4]`` and classes ``[N_i]`` (host arrays)
                in the coordinates of the original image.
            image_sizes: (width, height) of the valid part of each stored image (default: the
                whole ``W x H``); the rest of the storage must be zero.
            original_sizes: (width, height) of each original image, when the stored image was
                resized from it (default: ``image_sizes``).
            gt_bboxes_ignore: optional per-image ignore boxes, warped like ``boxes``.
            img_info: passed through (default: widths, heights and running ids).
            params: the parameters to apply (default: drawn with ``generator``).

        Returns:
            The CPU collate's batch dict: ``img`` [B, 3, H, W] float32 on the device,
            ``img_info``, ``warp_matrix`` (list of float32 [3, 3]), ``gt_bboxes`` /
            ``gt_labels`` (/ ``gt_bboxes_ignore``) as per-image numpy arrays, plus the GT padded
            on the device under ``gt_bboxes_padded``, ``gt_labels_padded``, ``gt_valid`` (and
            ``gt_bboxes_ignore_padded``, ``gt_ignore_valid``), which the head's batched loss
            reads without another copy.
        """
        if not isinstance(images, torch.Tensor) and image_sizes is None:
            image_sizes = [(np.shape(a)[1], np.shape(a)[0]) for a in images]
        images = self._as_uint8_batch(images)
        batch_size, stored_h, stored_w = images.shape[:3]
        stored = _sizes(image_sizes, batch_size, (stored_w, stored_h))
        original = _sizes(original_sizes, batch_size, None) if original_sizes is not None else stored
        params = params if params is not None else self.sample(batch_size, generator)
        if len(params) != batch_size:
            raise ValueError(f"{len(params)} augmentation parameters for {batch_size} images")

        raw_w, raw_h = original[:, 0], original[:, 1]
        dst = torch.tensor(self.dst_sizes(raw_w, raw_h), dtype=torch.float64)
        matrices = warp_matrices(params, raw_w, raw_h, dst[:, 0], dst[:, 1], self.keep_ratio)
        # Stored as float32 and applied as stored, as the CPU path: image, boxes and the inverse
        # used on predictions then agree exactly.
        matrices32 = matrices.to(torch.float32)
        matrices = matrices32.to(torch.float64)

        box_rows, counts = pad_rows(boxes, (4,), min_rows=1)
        label_rows, label_counts = pad_rows(labels, ())
        if counts != label_counts:
            raise ValueError(f"boxes and labels differ in length per image: {counts} vs {label_counts}")
        warped_boxes = warp_boxes_batched(box_rows, matrices, dst[:, 0], dst[:, 1])
        ignore_rows = ignore_counts = None
        if gt_bboxes_ignore is not None:
            ignore_rows, ignore_counts = pad_rows(gt_bboxes_ignore, (4,))
            ignore_rows = warp_boxes_batched(ignore_rows, matrices, dst[:, 0], dst[:, 1])

        to_source = self._source_matrices(matrices, original, stored, stored_w, stored_h)
        canvas_w, canvas_h = self._canvas(dst)
        per_image = torch.cat([
            to_source.reshape(batch_size, 9).to(torch.float32),
            torch.stack([params.brightness, params.contrast, params.saturation,
                         params.saturation_on.to(torch.float64), dst[:, 0], dst[:, 1]], 1).to(torch.float32),
        ], dim=1)
        gt = pack_rows(warped_boxes, label_rows, counts, ignore_rows, ignore_counts)
        packed = torch.cat([per_image, gt.reshape(batch_size, -1)], dim=1)
        packed = to_device(packed, self.device)
        per_image, gt = packed[:, :15], packed[:, 15:].reshape(gt.shape)

        img = self._warp(images, per_image[:, :9].reshape(-1, 3, 3), canvas_w, canvas_h)
        img = self._colour(img, per_image[:, 9:13])
        if bool((dst[:, 0] < canvas_w).any() or (dst[:, 1] < canvas_h).any()):
            img = self._zero_outside(img, per_image[:, 13:15])
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)

        num_gt = box_rows.shape[1]
        warped_np = warped_boxes.numpy()
        batch = {
            "img": img,
            "img_info": img_info if img_info is not None else {
                "height": original[:, 1].to(torch.int64), "width": original[:, 0].to(torch.int64),
                "id": torch.arange(batch_size)},
            "warp_matrix": list(matrices32.numpy()),
            "gt_bboxes": [warped_np[i, :n] for i, n in enumerate(counts)],
            "gt_labels": [np.asarray(image, dtype=np.int64).reshape(-1) for image in labels],
            **unpack_rows(gt, num_gt, with_ignore=ignore_rows is not None).batch_entries(),
        }
        if ignore_rows is not None:
            ignore_np = ignore_rows.numpy()
            batch["gt_bboxes_ignore"] = [ignore_np[i, :n] for i, n in enumerate(ignore_counts)]
        return batch

    # ------------------------------------------------------------------ pieces
    def _as_uint8_batch(self, images):
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
                raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {tuple(images.shape)}")
            return images
        arrays = [np.asarray(a) for a in images]
        height = max(a.shape[0] for a in arrays)
        width = max(a.shape[1] for a in arrays)
        batch = np.zeros((len(arrays), height, width, 3), dtype=np.uint8)
        for i, a in enumerate(arrays):
            batch[i, :a.shape[0], :a.shape[1]] = a
        return torch.from_numpy(batch)

    def _canvas(self, dst):
        width, height = int(dst[:, 0].max()), int(dst[:, 1].max())
        if self.pad_divisible > 0:
            width = -(-width // self.pad_divisible) * self.pad_divisible
            height = -(-height // self.pad_divisible) * self.pad_divisible
        return width, height

    @staticmethod
    def _source_matrices(matrices, original, stored, storage_w, storage_h):
        """Output pixel -> ``grid_sample`` coordinate in the stored image, ``[B, 3, 3]`` float64.

        The inverse warp gives original-image pixels (OpenCV's convention: pixel centres at
        integers); a stored image shrunk from the original maps them by cv2.resize's rule
        ``x' = (x + 0.5) * s - 0.5``; ``align_corners=False`` normalises by the storage size.
        """
        scale = stored / original  # [B, 2]
        to_stored = _eye(len(matrices))
        to_stored[:, 0, 0], to_stored[:, 1, 1] = scale[:, 0], scale[:, 1]
        to_stored[:, 0, 2], to_stored[:, 1, 2] = 0.5 * scale[:, 0] - 0.5, 0.5 * scale[:, 1] - 0.5
        normalise = torch.tensor([[2 / storage_w, 0, 1 / storage_w - 1],
                                  [0, 2 / storage_h, 1 / storage_h - 1],
                                  [0, 0, 1]], dtype=torch.float64)
        return normalise @ to_stored @ torch.linalg.inv(matrices)

    def _warp(self, images, to_source, width, height):
        """One ``grid_sample`` for the batch; integer-rounded as OpenCV's uint8 output."""
        source = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        # The projective map written out element-wise rather than as a matmul, which TF32 could
        # round to a third of a pixel.
        xs = torch.arange(width, dtype=torch.float32, device=self.device)[None, None, :]
        ys = torch.arange(height, dtype=torch.float32, device=self.device)[None, :, None]
        a = to_source[:, :, :, None, None]  # [B, 3, 3, 1, 1]
        u, v, w = (a[:, r, 0] * xs + a[:, r, 1] * ys + a[:, r, 2] for r in range(3))
        grid = torch.stack([u / w, v / w], dim=-1)  # [B, H, W, 2]
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped.round_()

    def _colour(self, img, colour):
        """``ColorTransform`` on the batch: [0, 1] scale, brightness, contrast, saturation,
        normalisation. Terms that are off are exact no-ops (add 0, multiply by 1, skipped)."""
        brightness, contrast, saturation, saturation_on = (c.reshape(-1, 1, 1, 1) for c in colour.unbind(1))
        img = img / 255
        img = (img + brightness) * contrast
        img = torch.where(saturation_on > 0, adjust_saturation_bgr(img, saturation), img)
        return (img - self.mean) / self.std

    @staticmethod
    def _zero_outside(img, sizes):
        """The collate's padding: zero (after normalisation) right of / below each image."""
        height, width = img.shape[-2:]
        xs = torch.arange(width, device=img.device)[None, :]
        ys = torch.arange(height, device=img.device)[None, :]
        inside_x = xs < sizes[:, :1]
        inside_y = ys < sizes[:, 1:]
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        return torch.where(inside[:, None], img, 0.0)


# --------------------------------------------------------------------------- data side
class DecodedImageStore:
    """Decoded images by record id, per device, for a dataset and all its subsets.

    A continual run trains each task on a subset of one training set, so without this every task
    decoded its images again (4,800 for 15p1's task 0, then a few hundred per task, about half of
    them seen before). The store lives in the dataset's ``shared_cache``, which its subsets share,
    so each image is decoded once per run and a task's cache is one gather on the device.
    """

    def __init__(self):
        self._entries: dict = {}  # device -> {"row": {id: row}, "images", "sizes", "original"}

    def gather(self, dataset, device, workers: int):
        """``(images [N, H, W, 3] on device, sizes [N, 2], original sizes [N, 2])`` of
        ``dataset.records``, decoding those not stored yet."""
        entry = self._entries.setdefault(str(device), {"row": {}, "images": None, "sizes": [], "original": []})
        new_records, seen = [], set()
        for record in dataset.records:
            if record.id not in entry["row"] and record.id not in seen:
                seen.add(record.id)
                new_records.append(record)
        if new_records:
            images, sizes, original = _decode(dataset, new_records, workers)
            images = images.to(device)
            start = len(entry["row"])
            entry["row"].update({r.id: start + i for i, r in enumerate(new_records)})
            entry["images"] = images if entry["images"] is None else torch.cat([entry["images"], images])
            entry["sizes"].append(sizes)
            entry["original"].append(original)
            entry["sizes"], entry["original"] = [torch.cat(entry["sizes"])], [torch.cat(entry["original"])]
        rows = torch.tensor([entry["row"][r.id] for r in dataset.records], dtype=torch.int64)
        if entry["images"] is None:  # an empty dataset
            width, height = dataset.input_size
            none = torch.zeros((0, 2), dtype=torch.int64)
            return torch.zeros((0, height, width, 3), dtype=torch.uint8, device=device), none, none
        images = entry["images"].index_select(0, rows.to(entry["images"].device))
        return images, entry["sizes"][0][rows], entry["original"][0][rows]


def _decode(dataset, records, workers: int):
    """Read and shrink ``records``' images in threads (OpenCV releases the GIL)."""
    width, height = (int(s) for s in dataset.input_size)
    images = torch.zeros((len(records), height, width, 3), dtype=torch.uint8)
    sizes = torch.zeros((len(records), 2), dtype=torch.int64)
    original = torch.zeros((len(records), 2), dtype=torch.int64)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, (img, original_size) in enumerate(pool.map(lambda r: _load_shrunk(dataset, r), records)):
            images[i, :img.shape[0], :img.shape[1]] = torch.from_numpy(img)
            sizes[i] = torch.tensor([img.shape[1], img.shape[0]])
            original[i] = torch.tensor(original_size)
    return images, sizes, original


def _load_shrunk(dataset, record):
    """The record's image, shrunk (never enlarged) to fit the input size, and its original size."""
    img = dataset.read_image(record)
    input_w, input_h = dataset.input_size
    height, width = img.shape[:2]
    ratio = min(1.0, input_w / width, input_h / height)
    if ratio < 1.0:
        size = (max(1, min(input_w, round(width * ratio))), max(1, min(input_h, round(height * ratio))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, (width, height)


class DecodedImageCache:
    """Every image of a dataset decoded once, as uint8 BGR, shrunk to fit the input size.

    ``images`` is one ``[N, H, W, 3]`` uint8 tensor (H, W the input size; each image at the top
    left, zero elsewhere), on ``device`` (the GPU holds 5,000 images of 320x320 in 1.5 GB). The
    pixels come from the dataset's ``DecodedImageStore`` (decoded once for the dataset and its
    subsets). The ground truth is the dataset's ``__getitem__``'s (difficult boxes handled the
    same way).

    Args:
        dataset: a ``BaseDataset`` (its records, ``read_image``, ``input_size`` and
            ``shared_cache`` are used).
        device: where the image tensor lives.
        workers: decoding threads (OpenCV releases the GIL).
    """

    def __init__(self, dataset, device="cpu", workers: int = 8):
        if getattr(dataset, "multi_scale", None):
            raise NotImplementedError("GPU augmentation does not support multi_scale (a random "
                                      "input size per sample); use the CPU pipeline")
        self.dataset = dataset
        self.input_size = tuple(int(s) for s in dataset.input_size)
        shared = getattr(dataset, "shared_cache", None)
        store = shared.setdefault("decoded_images", DecodedImageStore()) if shared is not None else DecodedImageStore()
        self.images, self.sizes, self.original_sizes = store.gather(dataset, device, workers)
        records = dataset.records
        self.gt_bboxes, self.gt_labels, self.gt_bboxes_ignore = [], [], []
        for record in records:
            trained = np.ones(len(record.labels), dtype=bool)
            if not dataset.train_on_difficult:
                trained = ~record.difficult
            self.gt_bboxes.append(record.boxes[trained])
            self.gt_labels.append(record.labels[trained])
            self.gt_bboxes_ignore.append(record.boxes[~trained])
        self.has_ignore = any(len(b) for b in self.gt_bboxes_ignore)

    def __len__(self):
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def img_info(self, indices):
        """The collated ``img_info`` of these images (as ``naive_collate`` gives it)."""
        records = [self.dataset.records[i] for i in indices]
        return {"file_name": [r.file_name for r in records],
                "height": torch.tensor([r.height for r in records]),
                "width": torch.tensor([r.width for r in records]),
                "id": torch.tensor([r.id for r in records])}


class GpuBatchLoader:
    """Batches of a ``DecodedImageCache`` augmented by ``GpuBatchAugment``: an iterable to use
    where a DataLoader of the CPU pipeline would be (no workers: the device does the work).

    Args:
        cache, augment: the decoded images and the batch augmentation.
        batch_size, shuffle, drop_last: as the DataLoader's.
        seed: seeds the order and the augmentation of each epoch (``seed + epoch``); every
            iteration starts the next epoch unless ``set_epoch`` says otherwise.
        rank, world_size: under DDP, each process takes every ``world_size``-th image of the
            shared order, from its ``rank`` (as ``DistributedSampler`` shards).
        batch_sampler: an iterable of lists of cache indices (a DataLoader's ``batch_sampler``,
            e.g. replay's half-current, half-buffer batches); it replaces the order above.
    """

    def __init__(self, cache: DecodedImageCache, augment: GpuBatchAugment, batch_size: int,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, batch_sampler=None):
        self.cache, self.augment = cache, augment
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.batch_sampler = batch_sampler

    def _num_images(self):
        # The same count on every rank (the remainder is dropped), or DDP ranks would disagree on
        # the number of steps.
        return len(self.cache) // self.world_size

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = self._num_images()
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def set_epoch(self, epoch: int):
        """Draw epoch ``epoch``'s order and augmentation next (and its batches, when a batch
        sampler draws them), so that a resumed fit continues the epochs it was interrupted in."""
        self.epoch = epoch
        if callable(getattr(self.batch_sampler, "set_epoch", None)):
            self.batch_sampler.set_epoch(epoch)

    def _batches(self, generator):
        """(CPU index, the same on the cache's device) of each batch of the epoch."""
        if self.batch_sampler is not None:
            for rows in self.batch_sampler:
                index = torch.as_tensor(rows, dtype=torch.int64)
                yield index, index.to(self.cache.images.device, non_blocking=True)
            return
        n = len(self.cache)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size][:self._num_images()]
        # One copy per epoch, not waiting for the GPU (a pageable copy would wait for every queued step).
        device = self.cache.images.device
        order_on_cache = order.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else order
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start:start + self.batch_size], order_on_cache[start:start + self.batch_size]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        for index, index_on_cache in self._batches(generator):
            images = self.cache.images.index_select(0, index_on_cache)
            rows = index.tolist()
            yield self.augment(
                images,
                [self.cache.gt_bboxes[i] for i in rows],
                [self.cache.gt_labels[i] for i in rows],
                image_sizes=self.cache.sizes[index],
                original_sizes=self.cache.original_sizes[index],
                gt_bboxes_ignore=[self.cache.gt_bboxes_ignore[i] for i in rows] if self.cache.has_ignore else None,
                img_info=self.cache.img_info(rows),
                generator=generator,
            )
