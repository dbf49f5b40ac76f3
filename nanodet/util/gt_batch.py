"""A batch's ground truth as one padded block: the format every batched consumer shares.

The GPU augmentation produces it, the batched label assigner reads it, the captured training step
copies it into its fixed buffers, and pseudo-labels append the teacher's boxes to it. A batch
carries it under ``PADDED_GT_KEYS`` (and ``PADDED_IGNORE_KEYS`` for ignore regions) beside
upstream's per-image lists (``gt_bboxes``, ``gt_labels``), which the per-image paths read.

On the host the block is packed as rows of (x0, y0, x1, y1, label, valid), each image's G ground
truth rows then its I ignore rows, so that one copy moves a whole batch to the device.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

PADDED_GT_KEYS = ("gt_bboxes_padded", "gt_labels_padded", "gt_valid")
PADDED_IGNORE_KEYS = ("gt_bboxes_ignore_padded", "gt_ignore_valid")
ROW_WIDTH = 6  # x0, y0, x1, y1, label, valid


class PaddedGT(NamedTuple):
    """A batch's ground truth padded to the largest count.

    ``bboxes [B, G, 4]`` float, ``labels [B, G]`` long, ``valid [B, G]`` bool; ``ignore
    [B, I, 4]`` and ``ignore_valid [B, I]`` the ignore regions (None when not used).
    """

    bboxes: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    ignore: Optional[torch.Tensor] = None
    ignore_valid: Optional[torch.Tensor] = None

    def batch_entries(self) -> dict:
        """The batch keys this ground truth travels under."""
        entries = dict(zip(PADDED_GT_KEYS, (self.bboxes, self.labels, self.valid)))
        if self.ignore is not None:
            entries.update(zip(PADDED_IGNORE_KEYS, (self.ignore, self.ignore_valid)))
        return entries


def with_extra_boxes(batch: dict, gt: PaddedGT, boxes: torch.Tensor, labels: torch.Tensor,
                     valid: torch.Tensor) -> dict:
    """``batch`` with ``boxes [B, R, 4]`` and ``labels [B, R]`` (where ``valid [B, R]``) after each
    image's ground truth ``gt``: in ``R`` new padded columns (fixed shapes, nothing read back, as a
    CUDA graph needs) and, where the batch has them, in the per-image host lists (one copy to the
    host, which only an eager step's batch asks for). The input batch is not modified."""
    out = dict(batch)
    out.update(gt._replace(bboxes=torch.cat([gt.bboxes, boxes.to(gt.bboxes.dtype)], dim=1),
                           labels=torch.cat([gt.labels, labels.to(gt.labels.dtype)], dim=1),
                           valid=torch.cat([gt.valid, valid.bool()], dim=1)).batch_entries())
    if "gt_bboxes" in batch:
        host_boxes, host_labels, host_valid = (t.cpu().numpy() for t in (boxes.float(), labels, valid.bool()))
        out["gt_bboxes"] = [np.concatenate([np.asarray(own, np.float32).reshape(-1, 4), extra[keep]])
                            for own, extra, keep in zip(batch["gt_bboxes"], host_boxes, host_valid)]
        out["gt_labels"] = [np.concatenate([np.asarray(own, np.int64).reshape(-1), extra[keep].astype(np.int64)])
                            for own, extra, keep in zip(batch["gt_labels"], host_labels, host_valid)]
    return out


def from_batch(batch: dict, device: torch.device | str, with_ignore: bool = False) -> Optional[PaddedGT]:
    """The padded ground truth a batch already carries (on ``device``), or None."""
    if not all(key in batch for key in PADDED_GT_KEYS):
        return None
    bboxes, labels, valid = (batch[key] for key in PADDED_GT_KEYS)
    ignore = ignore_valid = None
    if with_ignore and batch.get(PADDED_IGNORE_KEYS[0]) is not None:
        ignore, ignore_valid = (batch[key] for key in PADDED_IGNORE_KEYS)
        ignore, ignore_valid = ignore.to(device).float(), ignore_valid.to(device).bool()
    return PaddedGT(bboxes.to(device).float(), labels.to(device).long(), valid.to(device).bool(), ignore, ignore_valid)


def pad_rows(items: Sequence, row_shape: tuple, min_rows: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Per-image host arrays (numpy or CPU tensors) -> (zero-padded float32 ``[B, R, *row_shape]``,
    each image's count); ``R`` is at least ``min_rows``."""
    arrays = [np.asarray(a, dtype=np.float32).reshape((-1,) + row_shape) for a in items]
    counts = [len(a) for a in arrays]
    out = np.zeros((len(arrays), max([min_rows] + counts)) + row_shape, dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return torch.from_numpy(out), counts


def pack_rows(boxes: torch.Tensor, labels: torch.Tensor, counts: Sequence[int],
              ignore: Optional[torch.Tensor] = None, ignore_counts: Optional[Sequence[int]] = None) -> torch.Tensor:
    """``[B, G + I, 6]`` rows (x0, y0, x1, y1, label, valid) from padded ``boxes [B, G, 4]``,
    ``labels [B, <=G]`` and the counts: ground truth, then the ignore regions (label 0)."""
    batch_size, num_gt = boxes.shape[:2]
    valid = torch.arange(num_gt)[None, :] < torch.tensor(list(counts), dtype=torch.long).reshape(-1, 1)
    label_columns = torch.zeros(batch_size, num_gt)
    label_columns[:, :labels.shape[1]] = labels
    parts = [torch.cat([boxes, label_columns[..., None], valid[..., None].float()], dim=2)]
    if ignore is not None:
        ignore_count = torch.tensor(list(ignore_counts), dtype=torch.long).reshape(-1, 1)
        ignore_valid = torch.arange(ignore.shape[1])[None, :] < ignore_count
        parts.append(torch.cat([ignore, torch.zeros_like(ignore[..., :1]), ignore_valid[..., None].float()], dim=2))
    return torch.cat(parts, dim=1)


def unpack_rows(packed: torch.Tensor, num_gt: int, with_ignore: bool) -> PaddedGT:
    """``PaddedGT`` views of rows made by ``pack_rows`` (wherever they now are)."""
    gt, ignore = packed[:, :num_gt], packed[:, num_gt:]
    padded = PaddedGT(gt[..., :4], gt[..., 4].long(), gt[..., 5] > 0)
    if with_ignore:
        padded = padded._replace(ignore=ignore[..., :4], ignore_valid=ignore[..., 5] > 0)
    return padded


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy; from pinned memory on CUDA, so the GPU's queue is not drained."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pad_gt_batch(gt_meta: dict, device: torch.device | str, with_ignore: bool = False) -> PaddedGT:
    """The batch's ground truth as ``PaddedGT`` on ``device``.

    A batch already carrying ``PADDED_GT_KEYS`` is used as it is. Host arrays (numpy or CPU
    tensors) are packed by ``pack_rows`` and copied once. Per-image device tensors are padded
    where they are. ``G`` is at least 1, so a batch without any ground truth takes the same path
    as the others (all padding).
    """
    device = torch.device(device)
    carried = from_batch(gt_meta, device, with_ignore)
    if carried is not None:
        return carried
    boxes, labels = list(gt_meta["gt_bboxes"]), list(gt_meta["gt_labels"])
    ignores = None
    if with_ignore and gt_meta.get("gt_bboxes_ignore") is not None:
        ignores = [np.zeros((0, 4)) if x is None else x for x in gt_meta["gt_bboxes_ignore"]]
    if any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in boxes + labels + (ignores or [])):
        return pad_on_device(boxes, labels, ignores, device)
    box_rows, counts = pad_rows(boxes, (4,), min_rows=1)
    label_rows, label_counts = pad_rows(labels, ())
    if counts != label_counts:
        raise ValueError(f"gt_bboxes and gt_labels differ in length per image: {counts} vs {label_counts}")
    ignore_rows, ignore_counts = pad_rows(ignores, (4,)) if ignores is not None else (None, None)
    packed = pack_rows(box_rows, label_rows, counts, ignore_rows, ignore_counts)
    return unpack_rows(to_device(packed, device), box_rows.shape[1], ignores is not None)


def pad_on_device(boxes: Sequence, labels: Sequence, ignores: Optional[Sequence],
                  device: torch.device | str) -> PaddedGT:
    """``pad_gt_batch`` for per-image tensors already on the device (no host copy at all)."""
    def pad(items, row_shape, dtype, min_rows):
        tensors = [torch.as_tensor(t).to(device=device, dtype=dtype).reshape((-1,) + row_shape) for t in items]
        rows = max(min_rows, max((t.shape[0] for t in tensors), default=0))
        out = torch.zeros((len(tensors), rows) + row_shape, dtype=dtype, device=device)
        valid = torch.zeros((len(tensors), rows), dtype=torch.bool, device=device)
        for i, t in enumerate(tensors):  # host-known shapes: copies only, no sync
            out[i, :t.shape[0]] = t
            valid[i, :t.shape[0]] = True
        return out, valid

    bboxes, valid = pad(boxes, (4,), torch.float32, 1)
    all_labels, _ = pad(labels, (), torch.long, bboxes.shape[1])
    padded = PaddedGT(bboxes, all_labels, valid)
    if ignores is not None:
        ignore, ignore_valid = pad(ignores, (4,), torch.float32, 0)
        padded = padded._replace(ignore=ignore, ignore_valid=ignore_valid)
    return padded


def gt_lists_to_device(items: Sequence, row_shape: tuple, dtype: torch.dtype,
                       device: torch.device | str) -> list[torch.Tensor]:
    """Per-image arrays (numpy or tensors) -> per-image device tensors, with one copy for the whole
    batch instead of one per image (the per-image assigner's input)."""
    device = torch.device(device)
    tensors = [torch.as_tensor(item).reshape((-1,) + row_shape) for item in items]
    counts = [t.shape[0] for t in tensors]
    if not all(t.device.type == "cpu" for t in tensors):
        return [t.to(device=device, dtype=dtype) for t in tensors]
    return list(to_device(torch.cat(tensors).to(dtype), device).split(counts))
