"""The Dynamic Soft Label Assigner over a whole batch at once.

The same rule as :class:`DynamicSoftLabelAssigner` (see ``dsl_assigner.py``), computed on
``[B, P, G]`` tensors for a batch whose ground truth is padded to ``G`` boxes per image with a
validity mask. No Python loop over images, GTs or priors and no host sync: every shape is known
from the inputs' shapes, never from their values.

How the data-dependent parts keep fixed shapes:

* **padding**: padded GT columns are never candidates (their centre test is masked out), get
  dynamic k = 0 (so the top-k never marks them) and an infinite cost (so the conflict rule never
  picks them). An image without GT is an image whose columns are all padding: it gets no
  candidate, hence no positive, as the per-image path's early return gives.
* **dynamic k**: each GT's ``k = max(1, int(sum of its top-``topk`` candidate IoUs))`` is at most
  ``topk``, so a top-k of fixed size ``topk`` over the priors gives every GT's cheapest
  candidates in order, and the rank mask ``rank < k`` keeps the first ``k`` of them.
* **conflicts**: a prior claimed by several GTs is given to the GT of least cost over all of its
  image's GTs (an ``argmin`` over the padded GT axis with padding at infinite cost), written with
  ``torch.where`` over the whole ``[B, P, G]`` matching.
* **ignore regions**: padded ignore boxes get IoF 0, so they never reach the threshold.

Same float arithmetic, column by column, as the per-image assigner, so the assignments are the
same; only two candidates of exactly equal cost for the same GT could be ordered differently by
``topk`` (which does not promise an order among equal values).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ...loss.iou_loss import bbox_overlaps
from .dsl_assigner import INF


class BatchedAssignResult(NamedTuple):
    """Per-prior assignment of a batch, ``[B, P]`` each, with :class:`AssignResult`'s
    conventions.

    Attributes:
        gt_inds: 1-based index of the assigned GT in its image's padded GT list; 0 for
            background, -1 for ignored.
        labels: class of the assigned GT, -1 for priors without one.
        max_overlaps: IoU of a positive prior's predicted box with its GT (its soft label);
            for the others ``-INF`` when the image had a candidate, else 0 (as upstream).
        positive: ``gt_inds > 0``.
    """

    gt_inds: torch.Tensor
    labels: torch.Tensor
    max_overlaps: torch.Tensor
    positive: torch.Tensor


def batched_center_in_gt_mask(priors: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
    """``[B, P, G]`` bool: whether each prior centre (``priors [P, >=2]``) lies strictly inside
    each GT box (``gt_bboxes [B, G, 4]``)."""
    # Four comparisons instead of the per-image path's min over a [P, G, 4] stack of
    # differences: for floats ``a - b > 0`` exactly when ``a > b``, so the mask is the same.
    cx, cy = priors[None, :, None, 0], priors[None, :, None, 1]
    x0, y0, x1, y1 = (gt_bboxes[:, None, :, i] for i in range(4))
    return (cx > x0) & (cy > y0) & (x1 > cx) & (y1 > cy)


def batched_soft_label_cls_cost(cls_logits: torch.Tensor, gt_labels: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """``[B, P, G]`` classification cost; :func:`dsl_assigner.soft_label_cls_cost` for a batch
    (the same O(P*C + P*G) split of the sum over classes).

    ``gt_labels [B, G]`` must be valid class indices everywhere (padding included).
    """
    scores = cls_logits.sigmoid()
    zeros = torch.zeros_like(cls_logits)
    neg_cost = F.binary_cross_entropy_with_logits(cls_logits, zeros, reduction="none")
    neg_cost = neg_cost * (zeros - scores).abs().pow(2.0)
    index = gt_labels.long()[:, None, :].expand(-1, cls_logits.size(1), -1)
    label_logits = cls_logits.gather(2, index)
    label_scores = scores.gather(2, index)
    pos_cost = F.binary_cross_entropy_with_logits(label_logits, ious, reduction="none")
    pos_cost = pos_cost * (ious - label_scores).abs().pow(2.0)
    return neg_cost.sum(dim=2, keepdim=True) - neg_cost.gather(2, index) + pos_cost


class BatchedDynamicSoftLabelAssigner:
    """Args: as :class:`DynamicSoftLabelAssigner` (``topk``, ``iou_factor``,
    ``ignore_iof_thr``)."""

    def __init__(self, topk: int = 13, iou_factor: float = 3.0, ignore_iof_thr: float = -1) -> None:
        self.topk = topk
        self.iou_factor = iou_factor
        self.ignore_iof_thr = ignore_iof_thr

    @torch.no_grad()
    def assign(
        self,
        pred_scores: torch.Tensor,
        priors: torch.Tensor,
        decoded_bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_valid: torch.Tensor,
        gt_bboxes_ignore: Optional[torch.Tensor] = None,
        ignore_valid: Optional[torch.Tensor] = None,
    ) -> BatchedAssignResult:
        """Match the priors of every image of a batch to that image's GT boxes.

        Args:
            pred_scores (Tensor [B, P, C]): class logits (before sigmoid).
            priors (Tensor [P, 4]): (cx, cy, stride_x, stride_y), the same for every image.
            decoded_bboxes (Tensor [B, P, 4]): predicted xyxy boxes.
            gt_bboxes (Tensor [B, G, 4]): xyxy GT boxes, padded to G per image.
            gt_labels (Tensor [B, G]): their classes (any value at padding).
            gt_valid (Tensor [B, G] bool): which GT entries are real.
            gt_bboxes_ignore (Tensor [B, I, 4] or None), ignore_valid (Tensor [B, I] bool):
                padded ignore regions, used when ``ignore_iof_thr > 0``.

        Returns:
            BatchedAssignResult
        """
        batch_size, num_priors = decoded_bboxes.shape[:2]
        if gt_bboxes.size(1) == 0:  # no GT in the whole batch (a shape, not a value)
            gt_inds = decoded_bboxes.new_zeros((batch_size, num_priors), dtype=torch.long)
            return BatchedAssignResult(
                gt_inds, gt_inds - 1, decoded_bboxes.new_zeros((batch_size, num_priors)), gt_inds > 0
            )
        pred_scores = pred_scores.float()
        decoded_bboxes = decoded_bboxes.float()
        gt_bboxes = gt_bboxes.float()
        gt_valid = gt_valid.bool()
        gt_labels = torch.where(gt_valid, gt_labels.long(), 0)  # padding: any valid class index

        inside = batched_center_in_gt_mask(priors, gt_bboxes) & gt_valid[:, None, :]
        candidates = inside.any(dim=2)  # [B, P]
        ious = bbox_overlaps(decoded_bboxes, gt_bboxes)  # [B, P, G]
        iou_cost = -torch.log(ious + 1e-7)
        cost = batched_soft_label_cls_cost(pred_scores, gt_labels, ious) + iou_cost * self.iou_factor
        # Padding is never the cheapest GT of a prior.
        cost = cost.masked_fill(~gt_valid[:, None, :], INF)

        matching = self.dynamic_k_matching(cost, ious, candidates, gt_valid)
        foreground = matching.any(dim=2)
        matched_gt = matching.to(torch.uint8).argmax(dim=2)
        matched_ious = (matching * ious).sum(dim=2)

        gt_inds = torch.where(foreground, matched_gt + 1, 0)
        labels = torch.where(foreground, gt_labels.gather(1, matched_gt), -1)
        unmatched = torch.where(candidates.any(dim=1, keepdim=True), -INF, 0.0).to(ious.dtype)
        max_overlaps = torch.where(foreground, matched_ious, unmatched)

        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.size(1) > 0:
            iof = bbox_overlaps(decoded_bboxes, gt_bboxes_ignore.float(), mode="iof")
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid.bool()[:, None, :], 0.0)
            ignored = iof.max(dim=2).values > self.ignore_iof_thr
            # The per-image path returns before the ignore step for an image without GT.
            ignored &= gt_valid.any(dim=1, keepdim=True)
            gt_inds = gt_inds.masked_fill(ignored, -1)
        return BatchedAssignResult(gt_inds, labels, max_overlaps, gt_inds > 0)

    def dynamic_k_matching(self, cost: torch.Tensor, ious: torch.Tensor, candidates: torch.Tensor,
                           gt_valid: torch.Tensor) -> torch.Tensor:
        """``[B, P, G]`` bool matching; :meth:`DynamicSoftLabelAssigner.dynamic_k_matching`
        over a padded batch (see the module docstring)."""
        num_priors = cost.size(1)
        k = min(self.topk, num_priors)
        not_candidate = ~candidates[:, :, None]
        candidate_ious = ious.masked_fill(not_candidate, 0.0)
        dynamic_ks = candidate_ious.topk(k, dim=1).values.sum(dim=1).int().clamp(min=1)
        dynamic_ks = torch.where(gt_valid, dynamic_ks, 0)  # [B, G]
        candidate_cost = cost.masked_fill(not_candidate, INF)
        cheapest = candidate_cost.topk(k, dim=1, largest=False).indices  # [B, k, G]
        rank = torch.arange(k, device=cost.device)[None, :, None]
        matching = torch.zeros_like(cost, dtype=torch.bool)
        matching.scatter_(1, cheapest, rank < dynamic_ks[:, None, :])
        matching &= candidates[:, :, None]

        conflicted = matching.sum(dim=2) > 1
        cheapest_gt = torch.zeros_like(matching).scatter_(2, cost.argmin(dim=2, keepdim=True), True)
        return torch.where(conflicted[:, :, None], cheapest_gt, matching)
