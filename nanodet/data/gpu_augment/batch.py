"""``GpuBatchAugment``: one batch's boxes (matrices, warped ground truth) on the host, its pixels
(warp, colour, zero outside the image) on the device, and the CPU collate's batch dict."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...util.gt_batch import pack_rows, pad_rows, to_device, unpack_rows
from ..transform.warp import get_minimum_dst_shape
from .params import AugmentParams, AugmentSampler, identity_matrices, warp_boxes_batched, warp_matrices

# OpenCV's float HSV conversion divides by |v| + FLT_EPSILON.
FLT_EPSILON = 1.1920928955078125e-07
# The per-image columns of the host-to-device copy: sampling matrix, colour terms, output size.
SOURCE_COLUMNS, COLOUR_COLUMNS, SIZE_COLUMNS = slice(0, 9), slice(9, 13), slice(13, 15)
PER_IMAGE_COLUMNS = 15


def adjust_saturation_bgr(img: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale the HSV saturation of BGR float images ``[B, 3, H, W]`` by ``factor`` ([B, 1, 1, 1]):
    OpenCV's float BGR->HSV, ``S *= factor``, HSV->BGR, in closed form. With ``v`` the channel
    maximum, OpenCV's round trip gives ``v - factor * v / (|v| + eps) * (v - c)`` for every
    channel ``c`` (also for values outside [0, 1], which brightness and contrast can produce)."""
    v = img.amax(dim=1, keepdim=True)
    return v - factor * (v / (v.abs() + FLT_EPSILON)) * (v - img)


def _sizes(values, batch_size, default):
    if values is None:
        return torch.tensor([default] * batch_size, dtype=torch.float64)
    return torch.as_tensor(np.asarray(values), dtype=torch.float64).reshape(batch_size, 2)


class Warp(NamedTuple):
    """Each image's output size and warp: the float32 matrices as stored (``warp_matrix``) and the
    same values as float64, which image, boxes and predictions all use, so they agree exactly."""

    dst: torch.Tensor  # [B, 2] float64 (width, height)
    matrices32: torch.Tensor  # [B, 3, 3] float32
    matrices: torch.Tensor  # [B, 3, 3] float64


class WarpedGT(NamedTuple):
    """The batch's ground truth padded to rows on the host, boxes already warped."""

    boxes: torch.Tensor  # [B, N, 4] float32, N >= 1
    labels: torch.Tensor  # [B, N]
    counts: list  # real rows per image
    ignore: Optional[torch.Tensor]  # [B, M, 4] float32, or None without ignore boxes
    ignore_counts: Optional[list]


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
                 device: torch.device | str = "cuda", augment: bool = True, pad_divisible: int = 32,
                 channels_last: bool = False) -> None:
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

    def dst_sizes(self, raw_w: torch.Tensor, raw_h: torch.Tensor) -> list[tuple[int, int]]:
        """Each image's output (width, height), as ``ShapeTransform``: the keep-ratio fit (rounded
        up to ``divisible``) or the input size."""
        if not self.keep_ratio:
            return [self.input_size] * len(raw_w)
        return [get_minimum_dst_shape((w, h), self.input_size, self.sampler.divisible)
                for w, h in zip(raw_w.tolist(), raw_h.tolist())]

    def __call__(self, images: torch.Tensor | Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], image_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
                 original_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
                 gt_bboxes_ignore: Sequence[np.ndarray] | None = None, img_info: Mapping[str, Any] | None = None,
                 params: Optional[AugmentParams] = None,
                 generator: Optional[torch.Generator] = None) -> dict[str, Any]:
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
        images, stored, original = self._stored_batch(images, image_sizes, original_sizes)
        params = params if params is not None else self.sample(len(images), generator)
        if len(params) != len(images):
            raise ValueError(f"{len(params)} augmentation parameters for {len(images)} images")
        warp = self._warp_geometry(params, original)
        gt = self._warped_gt(boxes, labels, gt_bboxes_ignore, warp)
        to_source = self._source_matrices(warp.matrices, original, stored, images.shape[2], images.shape[1])
        per_image, gt_on_device = self._upload(to_source, params, warp.dst, gt)
        img = self._pixels(images, per_image, warp.dst)
        return self._batch(img, img_info, original, warp, gt, gt_on_device, labels)

    # ------------------------------------------------------------------ inputs
    def _stored_batch(self, images, image_sizes, original_sizes):
        """The images as one uint8 ``[B, H, W, 3]`` tensor, the (width, height) of each one's valid
        part and of the original it was shrunk from (float64 ``[B, 2]``)."""
        if not isinstance(images, torch.Tensor) and image_sizes is None:
            image_sizes = [(np.shape(a)[1], np.shape(a)[0]) for a in images]
        images = self._as_uint8_batch(images)
        batch_size, stored_h, stored_w = images.shape[:3]
        stored = _sizes(image_sizes, batch_size, (stored_w, stored_h))
        original = _sizes(original_sizes, batch_size, None) if original_sizes is not None else stored
        return images, stored, original

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

    # ------------------------------------------------------------------ boxes
    def _warp_geometry(self, params: AugmentParams, original) -> Warp:
        """Each image's output size and its warp from the original image, as ``ShapeTransform``."""
        raw_w, raw_h = original[:, 0], original[:, 1]
        dst = torch.tensor(self.dst_sizes(raw_w, raw_h), dtype=torch.float64)
        matrices = warp_matrices(params, raw_w, raw_h, dst[:, 0], dst[:, 1], self.keep_ratio)
        # Stored as float32 and applied as stored, as the CPU path: image, boxes and the inverse
        # used on predictions then agree exactly.
        matrices32 = matrices.to(torch.float32)
        return Warp(dst, matrices32, matrices32.to(torch.float64))

    @staticmethod
    def _warped_gt(boxes, labels, gt_bboxes_ignore, warp: Warp) -> WarpedGT:
        """Pad the boxes (at least one row, so the batch keeps its shape) and warp them, on the host:
        they are tiny and their counts live here anyway."""
        dst_w, dst_h = warp.dst[:, 0], warp.dst[:, 1]
        box_rows, counts = pad_rows(boxes, (4,), min_rows=1)
        label_rows, label_counts = pad_rows(labels, ())
        if counts != label_counts:
            raise ValueError(f"boxes and labels differ in length per image: {counts} vs {label_counts}")
        warped_boxes = warp_boxes_batched(box_rows, warp.matrices, dst_w, dst_h)
        ignore_rows = ignore_counts = None
        if gt_bboxes_ignore is not None:
            ignore_rows, ignore_counts = pad_rows(gt_bboxes_ignore, (4,))
            ignore_rows = warp_boxes_batched(ignore_rows, warp.matrices, dst_w, dst_h)
        return WarpedGT(warped_boxes, label_rows, counts, ignore_rows, ignore_counts)

    # ------------------------------------------------------------------ to the device
    def _upload(self, to_source, params: AugmentParams, dst, gt: WarpedGT):
        """The batch's one host-to-device copy: the per-image columns, then the packed GT."""
        batch_size = len(dst)
        per_image = torch.cat([
            to_source.reshape(batch_size, 9).to(torch.float32),
            torch.stack([params.brightness, params.contrast, params.saturation,
                         params.saturation_on.to(torch.float64), dst[:, 0], dst[:, 1]], 1).to(torch.float32),
        ], dim=1)
        packed_gt = pack_rows(gt.boxes, gt.labels, gt.counts, gt.ignore, gt.ignore_counts)
        packed = torch.cat([per_image, packed_gt.reshape(batch_size, -1)], dim=1)
        packed = to_device(packed, self.device)
        return packed[:, :PER_IMAGE_COLUMNS], packed[:, PER_IMAGE_COLUMNS:].reshape(packed_gt.shape)

    # ------------------------------------------------------------------ pixels
    def _pixels(self, images, per_image, dst):
        """Warp and colour the batch on the device, zero outside each image on the padded canvas."""
        canvas_w, canvas_h = self._canvas(dst)
        img = self._warp(images, per_image[:, SOURCE_COLUMNS].reshape(-1, 3, 3), canvas_w, canvas_h)
        img = self._colour(img, per_image[:, COLOUR_COLUMNS])
        if bool((dst[:, 0] < canvas_w).any() or (dst[:, 1] < canvas_h).any()):
            img = self._zero_outside(img, per_image[:, SIZE_COLUMNS])
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return img

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
        to_stored = identity_matrices(len(matrices))
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

    # ------------------------------------------------------------------ the batch
    @staticmethod
    def _batch(img, img_info, original, warp: Warp, gt: WarpedGT, gt_on_device, labels) -> dict:
        """The CPU collate's entries (host numpy GT) plus the padded GT already on the device."""
        warped_np = gt.boxes.numpy()
        batch = {
            "img": img,
            "img_info": img_info if img_info is not None else {
                "height": original[:, 1].to(torch.int64), "width": original[:, 0].to(torch.int64),
                "id": torch.arange(len(original))},
            "warp_matrix": list(warp.matrices32.numpy()),
            "gt_bboxes": [warped_np[i, :n] for i, n in enumerate(gt.counts)],
            "gt_labels": [np.asarray(image, dtype=np.int64).reshape(-1) for image in labels],
            **unpack_rows(gt_on_device, gt.boxes.shape[1], with_ignore=gt.ignore is not None).batch_entries(),
        }
        if gt.ignore is not None:
            ignore_np = gt.ignore.numpy()
            batch["gt_bboxes_ignore"] = [ignore_np[i, :n] for i, n in enumerate(gt.ignore_counts)]
        return batch
