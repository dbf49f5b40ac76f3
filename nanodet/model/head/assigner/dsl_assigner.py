"""Dynamic Soft Label Assigner of NanoDet-Plus (after OTA/SimOTA, with IoU soft labels).

For one image:

1. candidates are the priors whose center lies strictly inside at least one GT box;
2. the cost of matching prior p to GT g is a classification cost (binary cross-entropy of
   the predicted class logits against the soft label "IoU(p, g) at g's class, 0 elsewhere",
   scaled by |soft label - sigmoid|^2 and summed over classes) plus
   ``iou_factor * -log(IoU(p, g) + 1e-7)``;
3. each GT takes its k cheapest candidates, where k = max(1, int(sum of its top-``topk``
   candidate IoUs));
4. a prior claimed by several GTs keeps only the cheapest of all GTs.

Everything is tensor arithmetic over ``[num_priors, num_gts]`` matrices: no Python loop over
GTs or priors and no host sync, so the per-image call can later be batched over images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...loss.iou_loss import bbox_overlaps
from .assign_result import AssignResult

# Cost given to non-candidates and the "unassigned" overlap value, as upstream.
INF = 100000000.0


def center_in_gt_mask(priors: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
    """``[P, G]`` bool: whether the center (first two columns of ``priors``) lies strictly
    inside each GT box."""
    centers = priors[:, :2]
    left_top = centers[:, None, :] - gt_bboxes[None, :, :2]
    right_bottom = gt_bboxes[None, :, 2:] - centers[:, None, :]
    return torch.cat([left_top, right_bottom], dim=-1).min(dim=-1).values > 0


def soft_label_cls_cost(cls_logits: torch.Tensor, gt_labels: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """``[P, G]`` classification cost of prior p for GT g.

    The soft label is zero for every class except g's, where it is IoU(p, g), so the sum
    over classes splits into "all classes against zero" minus "g's class against zero" plus
    "g's class against the IoU". That is O(P*C + P*G) instead of upstream's O(P*G*C); the
    result is the same up to float rounding.
    """
    scores = cls_logits.sigmoid()
    zeros = torch.zeros_like(cls_logits)
    neg_cost = F.binary_cross_entropy_with_logits(cls_logits, zeros, reduction="none")
    neg_cost = neg_cost * (zeros - scores).abs().pow(2.0)
    labels = gt_labels.long()
    label_logits = cls_logits[:, labels]
    label_scores = scores[:, labels]
    pos_cost = F.binary_cross_entropy_with_logits(label_logits, ious, reduction="none")
    pos_cost = pos_cost * (ious - label_scores).abs().pow(2.0)
    return neg_cost.sum(dim=1, keepdim=True) - neg_cost[:, labels] + pos_cost


class DynamicSoftLabelAssigner:
    """Args:
        topk (int): how many of a GT's best candidate IoUs are summed to get its dynamic k.
        iou_factor (float): weight of the IoU cost.
        ignore_iof_thr (float): priors whose predicted box lies more than this fraction
            inside an ignore box (``gt_bboxes_ignore``) are ignored; <= 0 disables it.
    """

    def __init__(self, topk: int = 13, iou_factor: float = 3.0, ignore_iof_thr: float = -1) -> None:
        self.topk = topk
        self.iou_factor = iou_factor
        self.ignore_iof_thr = ignore_iof_thr

    @torch.no_grad()
    def assign(
        self, pred_scores: torch.Tensor, priors: torch.Tensor, decoded_bboxes: torch.Tensor, gt_bboxes: torch.Tensor,
        gt_labels: torch.Tensor, gt_bboxes_ignore: torch.Tensor | None = None,
    ) -> AssignResult:
        """Match the priors of one image to its GT boxes.

        Args:
            pred_scores (Tensor [P, C]): class logits (before sigmoid), as upstream's latest
                version takes them.
            priors (Tensor [P, 4]): (cx, cy, stride_x, stride_y) of each prior.
            decoded_bboxes (Tensor [P, 4]): predicted xyxy boxes.
            gt_bboxes (Tensor [G, 4]): xyxy GT boxes; gt_labels (Tensor [G]) their classes.
            gt_bboxes_ignore (Tensor [I, 4] or None): regions whose priors are ignored.

        Returns:
            AssignResult
        """
        num_gts, num_priors = gt_bboxes.size(0), decoded_bboxes.size(0)
        if num_gts == 0 or num_priors == 0:
            return AssignResult(
                num_gts,
                decoded_bboxes.new_zeros((num_priors,), dtype=torch.long),
                decoded_bboxes.new_zeros((num_priors,)),
                labels=decoded_bboxes.new_full((num_priors,), -1, dtype=torch.long),
            )
        pred_scores = pred_scores.float()
        decoded_bboxes = decoded_bboxes.float()
        gt_bboxes = gt_bboxes.float()

        candidates = center_in_gt_mask(priors, gt_bboxes).any(dim=1)
        ious = bbox_overlaps(decoded_bboxes, gt_bboxes)
        iou_cost = -torch.log(ious + 1e-7)
        cost = soft_label_cls_cost(pred_scores, gt_labels, ious) + iou_cost * self.iou_factor

        matching = self.dynamic_k_matching(cost, ious, candidates)
        foreground = matching.any(dim=1)
        matched_gt = matching.to(torch.uint8).argmax(dim=1)
        matched_ious = (matching * ious).sum(dim=1)

        gt_inds = torch.where(foreground, matched_gt + 1, 0)
        labels = torch.where(foreground, gt_labels.long()[matched_gt], -1)
        # Upstream leaves -INF at unmatched priors, or 0 when no prior was a candidate.
        unmatched = torch.where(candidates.any(), -INF, 0.0).to(ious.dtype)
        max_overlaps = torch.where(foreground, matched_ious, unmatched)

        if (
            self.ignore_iof_thr > 0
            and gt_bboxes_ignore is not None
            and gt_bboxes_ignore.numel() > 0
        ):
            iof = bbox_overlaps(decoded_bboxes, gt_bboxes_ignore.float(), mode="iof")
            gt_inds = gt_inds.masked_fill(iof.max(dim=1).values > self.ignore_iof_thr, -1)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels=labels)

    def dynamic_k_matching(self, cost: torch.Tensor, ious: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[P, G]`` bool matching: each GT takes its dynamic-k cheapest candidates, then a
        prior claimed by several GTs keeps only its cheapest GT (over all GTs, as upstream).

        Non-candidates get zero IoU (they add nothing to a GT's top-k sum) and infinite
        cost (they are never among the chosen, since k never exceeds the candidate count).
        """
        num_priors = cost.size(0)
        k = min(self.topk, num_priors)
        candidate_ious = ious.masked_fill(~candidates[:, None], 0.0)
        dynamic_ks = candidate_ious.topk(k, dim=0).values.sum(dim=0).int().clamp(min=1)
        candidate_cost = cost.masked_fill(~candidates[:, None], INF)
        cheapest = candidate_cost.topk(k, dim=0, largest=False).indices
        rank = torch.arange(k, device=cost.device)[:, None]
        matching = torch.zeros_like(cost, dtype=torch.bool)
        matching.scatter_(0, cheapest, rank < dynamic_ks[None, :])
        matching &= candidates[:, None]

        conflicted = matching.sum(dim=1) > 1
        cheapest_gt = torch.zeros_like(matching).scatter_(1, cost.argmin(dim=1, keepdim=True), True)
        return torch.where(conflicted[:, None], cheapest_gt, matching)
