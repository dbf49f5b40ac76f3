"""Pseudo-labels: the teacher's confident old-class detections join a batch's ground truth.

Every image of an incremental task shows old objects without labels; the detection loss would
push them to background. The teacher (the previous task's model) still detects them, so its
detections of old classes above a score become boxes to learn, except where they overlap a
labelled box (that object is already labelled, as a new class).

The whole batch is handled at once on the device, in shapes fixed by the batch's, so that a
CUDA graph could replay it (not yet proven on a GPU, so the step is still eager there): each
image's ``PSEUDO_LABEL_CANDIDATES`` best confident candidates, a class-wise greedy NMS of all
images together in ``NMS_ROUNDS`` rounds, one IoU test against the padded ground truth, and at
most ``PSEUDO_LABEL_ROWS`` boxes per image appended to the padded ground truth that the batched
assigner reads. No host synchronisation, except for the per-image host lists of an eager step
that has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ...model.head.nanodet_plus_head import greedy_nms_keep_in_rounds
from ...model.loss.iou_loss import bbox_overlaps
from ...util.gt_batch import pad_gt_batch, with_extra_boxes
from .parts import Part
from .teacher import class_mask

if TYPE_CHECKING:
    from ...model.head.nanodet_plus_head import NanoDetPlusHead
    from .base import TaskContext
    from .teacher import StudentOutputs

# Fixed sizes, so a step with pseudo-labels is one CUDA graph. A teacher's confident candidates
# (priors of unlabelled old objects scoring at least the threshold) are a few per object, far
# fewer than this; beyond it an image's lowest-scoring candidates are not considered.
PSEUDO_LABEL_CANDIDATES = 256
# Boxes appended per image (the head's max_per_img caps them too): the ground-truth columns the
# assigner reads grow by this much, so it is kept near an image's count of objects.
PSEUDO_LABEL_ROWS = 32
# Rounds of the NMS rule; where an image's candidates have not settled after them (behind a
# chain of overlapping boxes longer than this), its remaining candidates are dropped in that
# step rather than kept wrongly.
NMS_ROUNDS = 12


class PseudoLabels(Part):
    """The teacher's old-class detections scoring at least ``score`` join each new-task image's
    boxes (in the augmented image's coordinates), except where they overlap a ground-truth box
    by ``iou`` or more."""

    needs_teacher = True
    # Its shapes are fixed, so the step stays one CUDA graph (tests/test_pseudo_labels.py's
    # CUDA-graph test, passed on an H200, 2026-12-03).

    def __init__(self, score: float, iou: float = 0.5):
        self.score, self.iou = score, iou

    def extend_targets(self, context: TaskContext, model: torch.nn.Module, batch: dict,
                       teacher: StudentOutputs | None) -> dict:
        if teacher is None:
            return batch
        return add_pseudo_labels(model.head, batch, teacher.preds, context.old_classes, self.score, self.iou)


def add_pseudo_labels(head: NanoDetPlusHead, batch: dict, teacher_preds: torch.Tensor, old_classes: Sequence[int],
                      score_threshold: float, iou_threshold: float, candidates: int = PSEUDO_LABEL_CANDIDATES,
                      rows: int = PSEUDO_LABEL_ROWS, rounds: int = NMS_ROUNDS) -> dict:
    """The batch with the teacher's old-class detections added to each image's boxes.

    A detection is kept when its score is at least ``score_threshold`` (and above the head's own
    ``score_thr``), it is among its image's ``candidates`` best such scores, it survives the
    head's class-wise NMS (settled within ``rounds``), it is among the image's
    ``head.max_per_img`` best kept ones, and its IoU with every ground-truth box of its image is
    below ``iou_threshold``; the first ``rows`` of those are added. Boxes are in the network
    input's pixels, which are the augmented image's, so they line up with the (augmented) ground
    truth; they follow the image's own boxes, best first, in ``min(rows, candidates)`` new padded
    columns. The input batch is not modified.
    """
    cls_preds, reg_preds = head.split_preds(teacher_preds)
    device, (num_images, num_priors, num_classes) = cls_preds.device, cls_preds.shape
    height, width = batch["img"].shape[2:]
    with torch.autocast(device.type, enabled=False):
        scores = cls_preds.float().sigmoid()
        is_old = class_mask(frozenset(old_classes), num_classes, device)
        confident = (scores > head.score_thr) & (scores >= score_threshold) & is_old
        flat = scores.masked_fill(~confident, -1.0).reshape(num_images, num_priors * num_classes)
        score, index = flat.topk(min(candidates, flat.shape[1]), dim=1)  # best first
        valid = score >= 0
        prior, label = index // num_classes, index % num_classes
        reg = reg_preds.gather(1, prior[..., None].expand(-1, -1, reg_preds.shape[-1])).float()
        priors = head.get_center_priors(height, width, device)
        boxes = head.decode(priors[prior], reg, max_shape=(height, width))  # [B, K, 4]
        keep, settled = greedy_nms_keep_in_rounds(boxes, label, valid, head.nms_iou_threshold, rounds)
        keep &= settled
        if head.max_per_img > 0:
            keep &= keep.cumsum(dim=1) <= head.max_per_img

        gt = pad_gt_batch(batch, device, with_ignore=batch.get("gt_bboxes_ignore") is not None)
        overlap = bbox_overlaps(boxes, gt.bboxes).masked_fill(~gt.valid[:, None, :], 0.0)  # [B, K, G]
        keep &= overlap.amax(dim=2) < iou_threshold
        # the kept rows first, still best first (a stable sort), then the first ``rows`` of them
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :rows]
        boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
        label, keep = label.gather(1, order), keep.gather(1, order)
    return with_extra_boxes(batch, gt, boxes, label, keep)
