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

Layout: ``params`` (the random parameters and the warp matrices they make), ``batch``
(``GpuBatchAugment``: boxes, pixels and the batch dict) and ``loader`` (the decoded-image cache
and the loader that serves its batches).
"""

from .batch import FLT_EPSILON, GpuBatchAugment, adjust_saturation_bgr
from .loader import DecodedImageCache, DecodedImageStore, GpuBatchLoader
from .params import (
    SHAPE_DEFAULTS,
    AugmentParams,
    AugmentSampler,
    center_matrices,
    flip_matrices,
    perspective_matrices,
    random_matrices,
    resize_matrices,
    rotation_matrices,
    scale_matrices,
    shear_matrices,
    stretch_matrices,
    translate_matrices,
    warp_boxes_batched,
    warp_matrices,
)

__all__ = [
    "FLT_EPSILON",
    "SHAPE_DEFAULTS",
    "AugmentParams",
    "AugmentSampler",
    "DecodedImageCache",
    "DecodedImageStore",
    "GpuBatchAugment",
    "GpuBatchLoader",
    "adjust_saturation_bgr",
    "center_matrices",
    "flip_matrices",
    "perspective_matrices",
    "random_matrices",
    "resize_matrices",
    "rotation_matrices",
    "scale_matrices",
    "shear_matrices",
    "stretch_matrices",
    "translate_matrices",
    "warp_boxes_batched",
    "warp_matrices",
]
