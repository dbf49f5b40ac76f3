"""PASCAL VOC box evaluation: per-class AP at one IoU threshold (0.5), numpy only.

Protocol (as the VOC devkit's VOCevaldet):
  * detections of a class are taken in descending score order (stable sort, so ties keep
    the input order and results are deterministic);
  * each detection looks at the GT box of its class in its image with the highest IoU
    (among all of them, matched or not);
  * IoU >= iou_thr and that box is difficult -> ignored (neither TP nor FP);
    IoU >= iou_thr and the box is not yet matched -> TP (the box is now matched);
    IoU >= iou_thr and the box is already matched -> FP (duplicate);
    otherwise -> FP;
  * recall is over non-difficult GT; AP is the area under the monotone precision envelope
    at every recall point (VOC2010+), or the VOC2007 11-point mean with ``use_07_metric``.

Pixel convention: boxes are continuous coordinates, area = (x1 - x0) * (y1 - y0). The
devkit's "+1" on widths (integer pixel indices) is deliberately not used, so IoU agrees
with the COCO evaluator on the same boxes.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Union

import numpy as np

from .coco_detection import (EvalDataset, Results, detections_file_name, flatten_results, format_class_table,
                             resolve_class_ids, save_eval_files)
from .detections import Detections

logger = logging.getLogger(__name__)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes in continuous coordinates."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).prod(axis=1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)  # eps: degenerate boxes


def _group_indices(keys):
    """{key: indices of that key, ascending}, in one sort instead of a scan per key."""
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    return dict(zip(uniq.tolist(), np.split(order, starts[1:])))


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a PR curve given in detection order (recall non-decreasing)."""
    if use_07_metric:
        # Mean over recall 0, 0.1, ..., 1 of the best precision at that recall or above.
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision to the right
    steps = np.diff(recall)  # zero where recall does not move
    return float(np.sum(steps * envelope[1:]))


class VOCDetectionEvaluator:
    """VOC mAP at one IoU threshold (see the module docstring for the exact protocol).

    Args:
        dataset: object with ``class_names`` and ``records`` (id, boxes xyxy, labels,
            difficult), as for CocoDetectionEvaluator.
        iou_thr: IoU a detection needs with a GT box to match it.
        save_key: metric name the trainer uses to pick the best checkpoint.
        use_07_metric: VOC2007 11-point AP instead of the all-point area.
    """

    def __init__(self, dataset: EvalDataset, iou_thr: float = 0.5, save_key: str = "mAP",
                 use_07_metric: bool = False) -> None:
        self.class_names = list(dataset.class_names)
        self.iou_thr = iou_thr
        self.save_key = save_key
        self.use_07_metric = use_07_metric
        self.img_ids = [int(r.id) for r in dataset.records]
        # Ground truth as flat arrays: one row per GT box.
        self.gt_img = np.concatenate([np.full(len(r.labels), int(r.id), np.int64)
                                      for r in dataset.records] + [np.zeros(0, np.int64)])
        self.gt_labels = np.concatenate([np.asarray(r.labels, np.int64).reshape(-1)
                                         for r in dataset.records] + [np.zeros(0, np.int64)])
        self.gt_boxes = np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4)
                                        for r in dataset.records] + [np.zeros((0, 4))])
        self.gt_difficult = np.concatenate([np.asarray(r.difficult, bool).reshape(-1)
                                            for r in dataset.records] + [np.zeros(0, bool)])

    def evaluate(self, results: Union[Results, Detections], save_dir: str | os.PathLike | None = None, rank: int = -1,
                 *, class_ids: Iterable[int] | None = None) -> dict[str, Any]:
        """Score ``results`` ({img_id: {label: [[x0, y0, x1, y1, score], ...]}}).

        Args:
            results: detections in upstream NanoDet's format; missing images = no detections.
            save_dir: if given, write ``detections.json`` and ``metrics.json`` there.
            rank: as ``CocoDetectionEvaluator.evaluate``'s: >= 0 names the detections file
                ``results{rank}.json``; -1: none.
            class_ids: global labels to evaluate (any subset); None = every class.

        Returns:
            {"mAP": mean AP over evaluated classes with at least one non-difficult GT
            (nan if none has), "AP_50": the same value, "per_class_AP": {name: AP, nan for
            a class without non-difficult GT}}.
        """
        detections_file_name(rank)  # a bad rank fails before the work
        labels = resolve_class_ids(class_ids, len(self.class_names))
        det_img, det_labels, det_boxes, det_scores = flatten_results(
            results, self.img_ids, labels)
        per_class_ap = {}
        for label in labels:
            keep = det_labels == label
            per_class_ap[self.class_names[label]] = self._class_ap(
                label, det_img[keep], det_boxes[keep], det_scores[keep])
        defined = [ap for ap in per_class_ap.values() if not np.isnan(ap)]
        mean_ap = float(np.mean(defined)) if defined else float("nan")
        metrics = {"mAP": mean_ap, "AP_50": mean_ap, "per_class_AP": per_class_ap}

        logger.info(f"VOC mAP@{self.iou_thr}: {mean_ap:.4f}\n"
                    + format_class_table({f"AP{round(100 * self.iou_thr)}": per_class_ap}))
        if save_dir is not None:
            detections = [dict(image_id=int(i), category_id=int(c), bbox=b.tolist(),
                               score=float(s))
                          for i, c, b, s in zip(det_img, det_labels, det_boxes, det_scores)]
            save_eval_files(save_dir, detections, metrics, rank)
        return metrics

    def _class_ap(self, label, det_img, det_boxes, det_scores):
        """AP of one class; nan when it has no non-difficult GT."""
        gt_mask = self.gt_labels == label
        gt_img, gt_boxes = self.gt_img[gt_mask], self.gt_boxes[gt_mask]
        gt_difficult = self.gt_difficult[gt_mask]
        num_positives = int((~gt_difficult).sum())
        if num_positives == 0:
            return float("nan")

        order = np.argsort(-det_scores, kind="stable")
        det_img, det_boxes = det_img[order], det_boxes[order]

        # Best GT per detection does not depend on which GT are already matched, so it
        # is computed per image in one go; only "first claim wins" is order dependent.
        best_gt = np.full(len(det_img), -1, np.int64)
        best_iou = np.zeros(len(det_img))
        gt_by_img = _group_indices(gt_img)
        for img_id, det_idx in _group_indices(det_img).items():
            gt_idx = gt_by_img.get(img_id)
            if gt_idx is None:
                continue
            ious = box_iou(det_boxes[det_idx], gt_boxes[gt_idx])
            best_gt[det_idx] = gt_idx[ious.argmax(axis=1)]
            best_iou[det_idx] = ious.max(axis=1)

        hit = best_iou >= self.iou_thr
        ignored = hit & gt_difficult[best_gt]  # best_gt is -1 only where hit is False
        candidates = np.flatnonzero(hit & ~ignored)
        # In score order, the first detection to claim a GT is the TP; later ones duplicate.
        _, first = np.unique(best_gt[candidates], return_index=True)
        true_pos = np.zeros(len(det_img), bool)
        true_pos[candidates[first]] = True

        true_pos = true_pos[~ignored]  # ignored detections leave the PR curve unchanged
        tp_cum = np.cumsum(true_pos)
        fp_cum = np.cumsum(~true_pos)
        recall = tp_cum / num_positives
        precision = tp_cum / (tp_cum + fp_cum)  # every kept detection is TP or FP
        return average_precision(recall, precision, self.use_07_metric)
