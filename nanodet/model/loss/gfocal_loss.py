"""Generalized Focal Loss terms: Quality Focal Loss and Distribution Focal Loss.

Li et al., "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for
Dense Object Detection", https://arxiv.org/abs/2006.04388.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import REDUCTIONS, weighted_loss


@weighted_loss
def quality_focal_loss(pred: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor],
                       beta: float = 2.0, background_classes: torch.Tensor | None = None) -> torch.Tensor:
    """QFL per row of ``pred`` (``[N, C]`` logits).

    ``target`` is ``(label [N], score [N])``: a label in ``[0, C)`` marks a positive whose
    class should predict ``score`` (the IoU of its box); any other label (``C`` for
    background) makes the row all-negative. Every class is a binary cross-entropy against
    its soft target, scaled by ``|target - sigmoid(pred)| ** beta``. Returns ``[N]``.

    ``background_classes`` (``[C]`` bool, a continual-learning option): the classes whose
    negatives count; a class outside it is supervised only where it is the target (ERD trains
    the old classes' outputs on nothing but their own positives).
    """
    if len(target) != 2:
        raise ValueError("the QFL target must be a (label, score) pair")
    label, score = target
    num_classes = pred.size(1)
    # Soft target matrix: the IoU at (positive, its class), zero elsewhere. Written with a
    # comparison instead of indexing the positives, so it needs no host sync; element by
    # element it is the same arithmetic as treating negatives and positives separately.
    classes = torch.arange(num_classes, device=pred.device)
    is_target = label.long()[:, None] == classes[None, :]
    soft_target = torch.where(is_target, score[:, None].to(pred.dtype), pred.new_zeros(()))
    scale = (soft_target - pred.sigmoid()).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(pred, soft_target, reduction="none") * scale
    if background_classes is not None:
        loss = torch.where(is_target | background_classes[None, :], loss, loss.new_zeros(()))
    return loss.sum(dim=1)


@weighted_loss
def distribution_focal_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """DFL per row of ``pred`` (``[N, n + 1]`` distribution logits) against a continuous
    target ``label`` in ``[0, n)``: cross-entropy towards the two bins around the target,
    each weighted by its closeness. Returns ``[N]``."""
    dis_left = label.long()
    dis_right = dis_left + 1
    weight_left = dis_right.float() - label
    weight_right = label - dis_left.float()
    return (
        F.cross_entropy(pred, dis_left, reduction="none") * weight_left
        + F.cross_entropy(pred, dis_right, reduction="none") * weight_right
    )


def _check_reduction(reduction_override, default):
    if reduction_override not in (None,) + REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction_override!r}")
    return reduction_override or default


class QualityFocalLoss(nn.Module):
    """Quality Focal Loss; only the sigmoid form exists (``use_sigmoid`` must stay True)."""

    def __init__(self, use_sigmoid: bool = True, beta: float = 2.0, reduction: str = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError("QualityFocalLoss supports only use_sigmoid=True")
        self.use_sigmoid = use_sigmoid
        self.beta = beta
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None, reduction_override: str | None = None,
                background_classes: torch.Tensor | None = None) -> torch.Tensor:
        reduction = _check_reduction(reduction_override, self.reduction)
        return self.loss_weight * quality_focal_loss(
            pred, target, weight, beta=self.beta, reduction=reduction, avg_factor=avg_factor,
            background_classes=background_classes,
        )


class DistributionFocalLoss(nn.Module):
    """Distribution Focal Loss on the per-edge distance distributions."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None, reduction_override: str | None = None) -> torch.Tensor:
        reduction = _check_reduction(reduction_override, self.reduction)
        return self.loss_weight * distribution_focal_loss(
            pred, target, weight, reduction=reduction, avg_factor=avg_factor
        )
