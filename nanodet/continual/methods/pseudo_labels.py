"""Pseudo-labels: the teacher's confident old-class detections join a batch's ground truth.

Every image of an incremental task shows old objects without labels; the detection loss would
push them to background. The teacher (the previous task's model) still detects them, so its
detections of old classes above a score become boxes to learn, except where they overlap a
labelled box (that object is already labelled, as a new class).

The whole batch is handled at once on the device: one threshold, one class-wise NMS over all
images (``batched_nms`` keyed by image and class), one IoU test against the padded ground truth,
and the pseudo boxes appended to the padded ground truth that the batched assigner reads. A few
host synchronisations per step (candidate counts, one copy of the kept boxes for the host lists),
instead of a decode, an NMS and host copies per image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from ...model.loss.iou_loss import bbox_overlaps
from ...util.gt_batch import pad_gt_batch
from .parts import Part

if TYPE_CHECKING:
    from ...model.head.nanodet_plus_head import NanoDetPlusHead
    from .base import TaskContext
    from .teacher import StudentOutputs


class PseudoLabels(Part):
    """The teacher's old-class detections scoring at least ``score`` join each new-task image's
    boxes (in the augmented image's coordinates), except where they overlap a ground-truth box
    by ``iou`` or more. The kept boxes differ per batch and are listed on the host, so a step with
    pseudo-labels is not replayed as a CUDA graph."""

    needs_teacher = True
    capturable = False

    def __init__(self, score: float, iou: float = 0.5):
        self.score, self.iou = score, iou

    def extend_targets(self, context: TaskContext, model: torch.nn.Module, batch: dict,
                       teacher: StudentOutputs | None) -> dict:
        if teacher is None:
            return batch
        return add_pseudo_labels(model.head, batch, teacher.preds, context.old_classes, self.score, self.iou)


def add_pseudo_labels(head: NanoDetPlusHead, batch: dict, teacher_preds: torch.Tensor, old_classes: Sequence[int],
                      score_threshold: float, iou_threshold: float) -> dict:
    """The batch with the teacher's old-class detections added to each image's boxes.

    A detection is kept when its score is at least ``score_threshold`` (and above the head's own
    ``score_thr``), it survives the head's class-wise NMS, it is among the image's
    ``head.max_per_img`` best kept ones, and its IoU with every ground-truth box of its image is
    below ``iou_threshold``. Boxes are in the network input's pixels, which are the augmented
    image's, so they line up with the (augmented) ground truth; they follow the image's own boxes,
    best first. The input batch is not modified.
    """
    cls_preds, reg_preds = head.split_preds(teacher_preds)
    device, num_images, num_classes = cls_preds.device, cls_preds.shape[0], cls_preds.shape[-1]
    height, width = batch["img"].shape[2:]
    with torch.autocast(device.type, enabled=False):
        scores = cls_preds.float().sigmoid()
        is_old = torch.zeros(num_classes, dtype=torch.bool, device=device)
        is_old[sorted(old_classes)] = True
        confident = (scores > head.score_thr) & (scores >= score_threshold) & is_old
        image, prior, label = confident.nonzero(as_tuple=True)
        priors = head.get_center_priors(height, width, device)
        boxes = head.decode(priors[prior], reg_preds[image, prior].float(), max_shape=(height, width))
        score = scores[image, prior, label]
        # batched_nms keeps the survivors in decreasing score; a stable sort by image then gives
        # each image's detections best first, as the per-image NMS orders them.
        keep = batched_nms(boxes, score, image * num_classes + label, head.nms_iou_threshold)
        keep = keep[torch.sort(image[keep], stable=True).indices]
        image, boxes, label = image[keep], boxes[keep], label[keep]
        if head.max_per_img > 0:
            best = _rank_within_image(image, num_images) < head.max_per_img
            image, boxes, label = _select(best, image, boxes, label)

        gt = pad_gt_batch(batch, device, with_ignore=batch.get("gt_bboxes_ignore") is not None)
        # IoU of each box with each ground-truth box of its own image: [K, G]
        overlap = bbox_overlaps(boxes[:, None, :], gt.bboxes[image])[:, 0].masked_fill(~gt.valid[image], 0.0)
        free = overlap.max(dim=1).values < iou_threshold
        image, boxes, label = _select(free, image, boxes, label)
        rank = _rank_within_image(image, num_images)
    return _append(batch, gt, image, rank, boxes, label)


def _rank_within_image(image, num_images):
    """Position of each row among its image's rows (``image`` sorted)."""
    counts = torch.bincount(image, minlength=num_images)
    starts = counts.cumsum(0) - counts
    return torch.arange(len(image), device=image.device) - starts[image]


def _select(mask, *rows):
    return tuple(r[mask] for r in rows)


def _append(batch, gt, image, rank, boxes, label):
    """The batch with the pseudo boxes after each image's ground truth: in the padded tensors
    and in the per-image host lists."""
    num_images = gt.valid.shape[0]
    counts = torch.bincount(image, minlength=num_images).cpu().tolist()
    host_boxes = torch.split(boxes.float().cpu(), counts)
    host_labels = torch.split(label.cpu(), counts)
    out = dict(batch)
    out["gt_bboxes"] = [np.concatenate([np.asarray(own, np.float32).reshape(-1, 4), extra.numpy()])
                        for own, extra in zip(batch["gt_bboxes"], host_boxes)]
    out["gt_labels"] = [np.concatenate([np.asarray(own, np.int64).reshape(-1), extra.numpy().astype(np.int64)])
                        for own, extra in zip(batch["gt_labels"], host_labels)]
    out.update(gt.append(image, rank, boxes, label).batch_entries())
    return out
