"""COCO-style box evaluation (AP@[.5:.95], AP50, AP75, AP by size) through pycocotools or its
faster drop-in, faster-coco-eval (proven equal in tests/test_evaluator.py).

The ground truth is built in memory from ``dataset.records``, so any dataset (VOC, COCO,
a continual-learning subset of either) can be scored the same way. The evaluator
duck-types the dataset: it needs ``class_names`` and ``records`` whose items carry
``id, file_name, height, width, boxes (xyxy pixels), labels (global index), difficult``.

Boxes use continuous pixel coordinates (area = w * h, no VOC "+1"), as pycocotools does.

This module also holds the small helpers shared with the VOC evaluator (result
flattening, class-subset checks, file writing, the per-class table).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, Protocol, Sequence, Union

import numpy as np

from .detections import Detections

logger = logging.getLogger(__name__)

# Upstream NanoDet's detections: {img_id: {label: [[x0, y0, x1, y1, score], ...]}}.
Results = Mapping[int, Mapping[int, Sequence[Sequence[float]]]]


class EvalDataset(Protocol):
    """What the evaluators read of a dataset: its ``class_names`` and ``records`` (id, file_name,
    height, width, boxes xyxy, labels, difficult; ``nanodet.data.dataset.ImageRecord``)."""

    class_names: Sequence[str]
    records: Sequence[Any]



def coco_api(backend: str) -> tuple[type, type]:
    """(COCO, COCOeval) of a backend: ``pycocotools`` (the reference) or ``faster_coco_eval``
    (a maintained C++ implementation of the same evaluation, about 9 times faster on 2,000 images;
    tests/test_evaluator.py checks that both give the same numbers), or ``auto``: the faster one
    when installed."""
    if backend in ("auto", "faster_coco_eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            if backend != "auto":
                raise ImportError("evaluator backend faster_coco_eval: pip install faster-coco-eval") from None
    elif backend != "pycocotools":
        raise ValueError(f"evaluator backend must be auto, pycocotools or faster_coco_eval, got {backend!r}")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


# Order of COCOeval.stats[:6], named as upstream NanoDet names them.
COCO_METRIC_NAMES = ["mAP", "AP_50", "AP_75", "AP_small", "AP_m", "AP_l"]


# ----------------------------------------------------------------------------------------
# Helpers shared by both evaluators
# ----------------------------------------------------------------------------------------
def resolve_class_ids(class_ids: Iterable[int] | None, num_classes: int) -> list[int]:
    """Sorted unique global labels to evaluate; all classes when ``class_ids`` is None."""
    if class_ids is None:
        return list(range(num_classes))
    labels = sorted({int(c) for c in class_ids})
    if not labels:
        # pycocotools reads an empty catIds as "every category": refuse instead.
        raise ValueError("class_ids is empty: give at least one class to evaluate")
    bad = [c for c in labels if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class_ids {bad} outside the {num_classes} dataset classes")
    return labels


def flatten_results(results: Union[Results, Detections], img_ids: Iterable[int], class_ids: Iterable[int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn ``{img_id: {label: [[x0, y0, x1, y1, score], ...]}}`` into flat arrays.

    ``results`` may also be ``Detections`` (flat arrays, as the batched inference gives them).
    Detections of images outside ``img_ids`` or of classes outside ``class_ids`` are
    dropped: they are not part of this evaluation (and pycocotools rejects unknown images).
    Returns (image ids [N] int64, labels [N] int64, boxes [N, 4] float64, scores [N] float64).
    """
    if isinstance(results, Detections):
        keep = np.isin(results.image_ids, np.asarray(list(img_ids), np.int64)) & np.isin(
            results.labels, np.asarray(list(class_ids), np.int64))
        return (results.image_ids[keep].astype(np.int64), results.labels[keep].astype(np.int64),
                results.boxes[keep].astype(np.float64), results.scores[keep].astype(np.float64))
    img_ids, class_ids = set(img_ids), set(class_ids)
    img_col, label_col, dets = [], [], []
    for img_id, per_label in results.items():
        if int(img_id) not in img_ids:
            continue
        for label, rows in per_label.items():
            if int(label) not in class_ids:
                continue
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            img_col.append(np.full(len(rows), int(img_id), dtype=np.int64))
            label_col.append(np.full(len(rows), int(label), dtype=np.int64))
            dets.append(rows)
    if not dets:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros((0, 4)), np.zeros(0))
    dets = np.concatenate(dets)
    return np.concatenate(img_col), np.concatenate(label_col), dets[:, :4], dets[:, 4]


def _atomic_write_json(obj, path):
    """Write JSON to a temp file next to ``path`` then rename, so readers never see half a file."""
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _json_safe(value):
    """nan (metric undefined: no GT) -> null, so the file stays strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def detections_file_name(rank: int = -1) -> str:
    """``detections.json``, or upstream's ``results{rank}.json`` when a process rank (>= 0) is given."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < -1:
        raise ValueError(f"rank must be a process rank >= 0, or -1 for none, got {rank!r}")
    return "detections.json" if rank < 0 else f"results{rank}.json"


def save_eval_files(save_dir: str | os.PathLike, detections: list[dict[str, Any]], metrics: dict[str, Any],
                    rank: int = -1) -> None:
    """Write the detections (``detections_file_name(rank)``) and ``metrics.json`` into ``save_dir``
    atomically."""
    os.makedirs(save_dir, exist_ok=True)
    _atomic_write_json(detections, os.path.join(save_dir, detections_file_name(rank)))
    _atomic_write_json(_json_safe(metrics), os.path.join(save_dir, "metrics.json"))


def format_class_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """Plain-text table: ``columns`` maps a header to {class name: AP in 0..1}."""
    headers = ["class"] + list(columns)
    names = list(next(iter(columns.values())))
    rows = [[name] + [f"{100 * columns[h][name]:.1f}" for h in columns] for name in names]
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [headers] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# COCO evaluator
# ----------------------------------------------------------------------------------------
class CocoDetectionEvaluator:
    """Score detections with pycocotools' COCOeval on ground truth built from the dataset.

    Category id = global label + 1 (COCO ids start at 1). Difficult boxes become
    ``iscrowd=1``: COCOeval then ignores them, so a detection on one is neither TP nor FP
    (note COCOeval's crowd overlap is intersection / detection area, not IoU).
    Annotation ids start at 1 because COCOeval stores matched ids and treats 0 as "unmatched".

    Args:
        dataset: object with ``class_names`` and ``records`` (see the module docstring).
        save_key: metric name the trainer uses to pick the best checkpoint.
        backend: ``auto`` (faster_coco_eval when installed, else pycocotools), ``pycocotools``
            or ``faster_coco_eval`` (see ``coco_api``).
    """

    def __init__(self, dataset: EvalDataset, save_key: str = "mAP", backend: str = "auto") -> None:
        self.class_names = list(dataset.class_names)
        self.save_key = save_key
        self._coco, self._cocoeval = coco_api(backend)
        self.img_ids = [int(r.id) for r in dataset.records]
        self.coco_gt = self._build_ground_truth(dataset.records)

    def _build_ground_truth(self, records):
        images, annotations = [], []
        for rec in records:
            images.append(dict(id=int(rec.id), file_name=rec.file_name,
                               height=int(rec.height), width=int(rec.width)))
            boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
            difficult = np.asarray(rec.difficult, dtype=bool).reshape(-1)
            for box, label, diff in zip(boxes, np.asarray(rec.labels).reshape(-1), difficult):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=int(rec.id), category_id=int(label) + 1,
                    bbox=[float(box[0]), float(box[1]), float(w), float(h)],
                    area=float(w * h), iscrowd=int(diff)))
        categories = [dict(id=i + 1, name=n) for i, n in enumerate(self.class_names)]
        return self._make_coco(dict(images=images, annotations=annotations, categories=categories))

    def _make_coco(self, dataset_dict):
        coco = self._coco()
        coco.dataset = dataset_dict
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            coco.createIndex()
        return coco

    def results_to_coco_json(self, results: Union[Results, Detections],
                             class_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Upstream NanoDet results -> list of COCO detection dicts (bbox in xywh)."""
        img_ids, labels, boxes, scores = flatten_results(results, self.img_ids, class_ids)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        # Columns to Python lists in one go each (a float() per element cost seconds for 200,000).
        return [dict(image_id=i, category_id=c, bbox=b, score=s) for i, c, b, s in
                zip(img_ids.tolist(), (labels + 1).tolist(), xywh.tolist(), scores.tolist())]

    def _detections_coco(self, detections):
        # Built by hand rather than with COCO.loadRes, which cannot take an empty list;
        # this way "no detections" runs the same path and scores 0 where GT exists.
        anns = [{**d, "id": k, "area": d["bbox"][2] * d["bbox"][3], "iscrowd": 0}
                for k, d in enumerate(detections, start=1)]
        return self._make_coco(dict(images=self.coco_gt.dataset["images"], annotations=anns,
                                    categories=self.coco_gt.dataset["categories"]))

    def evaluate(self, results: Union[Results, Detections], save_dir: str | os.PathLike | None = None, rank: int = -1,
                 *, class_ids: Iterable[int] | None = None) -> dict[str, Any]:
        """Score ``results`` ({img_id: {label: [[x0, y0, x1, y1, score], ...]}}, or ``Detections``).

        Args:
            results: detections in upstream NanoDet's format (missing images = no detections),
                or flat ``Detections``.
            save_dir: if given, write ``detections.json`` and ``metrics.json`` there.
            rank: upstream's argument: a process rank >= 0 names the detections file
                ``results{rank}.json`` instead, as upstream names it; -1: none.
            class_ids: global labels to evaluate (any subset); None = every class.

        Returns:
            dict with mAP, AP_50, AP_75, AP_small, AP_m, AP_l (0..1; nan where the
            evaluated classes have no GT in that size range, pycocotools' -1),
            per_class_AP and per_class_AP50 ({class name: AP}, nan for a class without GT).
        """
        detections_file_name(rank)  # a bad rank fails before the work
        labels = resolve_class_ids(class_ids, len(self.class_names))
        detections = self.results_to_coco_json(results, labels)
        if not detections:
            logger.warning("No detections for the evaluated classes: every AP is 0.")

        coco_eval = self._cocoeval(self.coco_gt, self._detections_coco(detections), "bbox")
        coco_eval.params.imgIds = self.img_ids
        coco_eval.params.catIds = [c + 1 for c in labels]  # sorted, so index k = labels[k]
        progress, summary = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(progress):
            coco_eval.evaluate()
            coco_eval.accumulate()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()
        logger.debug(progress.getvalue())
        logger.info("\n" + summary.getvalue())

        metrics = {k: _undefined_to_nan(v) for k, v in zip(COCO_METRIC_NAMES, coco_eval.stats)}
        metrics.update(self._per_class_ap(coco_eval.eval["precision"], labels))
        logger.info("\n" + format_class_table({"AP50": metrics["per_class_AP50"],
                                               "mAP": metrics["per_class_AP"]}))
        if save_dir is not None:
            save_eval_files(save_dir, detections, metrics, rank)
        return metrics

    def _per_class_ap(self, precision, labels):
        # precision: [T iou thresholds, R recall points, K classes, A area ranges, M maxDets];
        # area index 0 = "all", maxDets index -1 = 100; -1 marks "no GT for this class".
        per_class_ap, per_class_ap50 = {}, {}
        for k, label in enumerate(labels):
            name = self.class_names[label]
            per_class_ap[name] = _mean_defined(precision[:, :, k, 0, -1])
            per_class_ap50[name] = _mean_defined(precision[0, :, k, 0, -1])
        return {"per_class_AP": per_class_ap, "per_class_AP50": per_class_ap50}


def _mean_defined(values):
    values = values[values > -1]
    return float(values.mean()) if values.size else float("nan")


def _undefined_to_nan(value):
    return float("nan") if value < 0 else float(value)
