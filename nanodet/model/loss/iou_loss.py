"""Box overlaps (IoU, IoF, GIoU) and the GIoU loss."""

from __future__ import annotations

import torch
import torch.nn as nn

from .utils import REDUCTIONS, weighted_loss

OVERLAP_MODES = ("iou", "iof", "giou")


def bbox_overlaps(bboxes1: torch.Tensor, bboxes2: torch.Tensor, mode: str = "iou", is_aligned: bool = False,
                  eps: float = 1e-6) -> torch.Tensor:
    """Overlaps between xyxy boxes ``bboxes1 [..., m, 4]`` and ``bboxes2 [..., n, 4]``.

    ``mode``: "iou"; "iof" (intersection over the area of ``bboxes1``); or "giou"
    (generalized IoU, in ``[-1, 1]``). Returns ``[..., m, n]``, or ``[..., m]`` pairwise
    when ``is_aligned`` (then m == n). Denominators are clamped to at least ``eps``.
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"mode must be one of {OVERLAP_MODES}, got {mode!r}")
    if bboxes1.size(-1) != 4 and bboxes1.numel() != 0:
        raise ValueError(f"bboxes1 must be [..., 4], got {tuple(bboxes1.shape)}")
    if bboxes2.size(-1) != 4 and bboxes2.numel() != 0:
        raise ValueError(f"bboxes2 must be [..., 4], got {tuple(bboxes2.shape)}")
    if bboxes1.shape[:-2] != bboxes2.shape[:-2]:
        raise ValueError("bboxes1 and bboxes2 must share their batch dimensions")
    batch_shape = bboxes1.shape[:-2]
    rows, cols = bboxes1.size(-2), bboxes2.size(-2)
    if is_aligned and rows != cols:
        raise ValueError(f"aligned overlaps need as many boxes on both sides ({rows} != {cols})")
    if rows * cols == 0:
        shape = batch_shape + ((rows,) if is_aligned else (rows, cols))
        return bboxes1.new_zeros(shape)

    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (bboxes2[..., 3] - bboxes2[..., 1])
    b1, b2 = bboxes1, bboxes2
    if not is_aligned:
        # Broadcast to [..., m, n, 4] so every pair is compared.
        b1, b2 = bboxes1[..., :, None, :], bboxes2[..., None, :, :]
        area1, area2 = area1[..., :, None], area2[..., None, :]

    lt = torch.max(b1[..., :2], b2[..., :2])
    rb = torch.min(b1[..., 2:], b2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - overlap if mode in ("iou", "giou") else area1

    # clamp, not max against a new eps tensor: that would copy from the host every call.
    union = union.clamp(min=eps)
    ious = overlap / union
    if mode != "giou":
        return ious
    enclosed_wh = (torch.max(b1[..., 2:], b2[..., 2:]) - torch.min(b1[..., :2], b2[..., :2])).clamp(min=0)
    enclosed_area = (enclosed_wh[..., 0] * enclosed_wh[..., 1]).clamp(min=eps)
    return ious - (enclosed_area - union) / enclosed_area


@weighted_loss
def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``1 - GIoU`` of aligned xyxy box pairs ``[n, 4]``; returns ``[n]``.

    Rezatofighi et al., "Generalized Intersection over Union", https://arxiv.org/abs/1902.09630.
    """
    return 1 - bbox_overlaps(pred, target, mode="giou", is_aligned=True, eps=eps)


class GIoULoss(nn.Module):
    def __init__(self, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None, reduction_override: str | None = None) -> torch.Tensor:
        # Upstream returns early, with a host sync, when no weight is positive; the weighted
        # sum below is then zero anyway, so the check is left out.
        if reduction_override not in (None,) + REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction_override!r}")
        reduction = reduction_override or self.reduction
        return self.loss_weight * giou_loss(
            pred, target, weight, eps=self.eps, reduction=reduction, avg_factor=avg_factor
        )
