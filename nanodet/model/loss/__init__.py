"""Detection losses: Quality Focal, Distribution Focal and GIoU."""

from .gfocal_loss import (
    DistributionFocalLoss,
    QualityFocalLoss,
    distribution_focal_loss,
    quality_focal_loss,
)
from .iou_loss import GIoULoss, bbox_overlaps, giou_loss
from .utils import reduce_loss, weight_reduce_loss, weighted_loss

__all__ = [
    "DistributionFocalLoss",
    "GIoULoss",
    "QualityFocalLoss",
    "bbox_overlaps",
    "distribution_focal_loss",
    "giou_loss",
    "quality_focal_loss",
    "reduce_loss",
    "weight_reduce_loss",
    "weighted_loss",
]
