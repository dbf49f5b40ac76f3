"""The result of matching priors to ground-truth boxes."""

from __future__ import annotations

from typing import Any

import torch


class AssignResult:
    """Per-prior assignment, upstream's (mmdet's) fields.

    Attributes:
        num_gts (int): number of ground-truth boxes considered.
        gt_inds (LongTensor [num_priors]): 1-based index of the assigned ground truth;
            0 means background, -1 means ignored.
        max_overlaps (Tensor [num_priors]): IoU between a positive prior's predicted box and
            its ground truth (the soft label of that prior); meaningless for the others.
        labels (LongTensor [num_priors] or None): class of the assigned ground truth, -1 for
            priors without one.
    """

    def __init__(self, num_gts: int, gt_inds: torch.Tensor, max_overlaps: torch.Tensor,
                 labels: torch.Tensor | None = None) -> None:
        self.num_gts = num_gts
        self.gt_inds = gt_inds
        self.max_overlaps = max_overlaps
        self.labels = labels

    @property
    def num_preds(self) -> int:
        return len(self.gt_inds)

    @property
    def info(self) -> dict[str, Any]:
        return {
            "num_gts": self.num_gts,
            "num_preds": self.num_preds,
            "gt_inds": self.gt_inds,
            "max_overlaps": self.max_overlaps,
            "labels": self.labels,
        }

    def __repr__(self):
        shape = tuple(self.gt_inds.shape) if self.gt_inds is not None else None
        return f"AssignResult(num_gts={self.num_gts}, gt_inds.shape={shape})"
