"""Upstream NanoDet's NMS signatures (``nanodet.model.module.nms``), for user code written for them.

``multiclass_nms`` takes upstream's arguments (scores with the background as the last column, an
``nms_cfg`` dict) and runs this package's class-wise NMS (the head's ``multiclass_nms``);
``batched_nms`` is torchvision's, returning upstream's ``(dets, keep)``.

``nms_cfg`` keys: ``type`` (only ``"nms"``: torchvision's hard NMS, upstream's only one too),
``iou_threshold`` (required), ``class_agnostic`` and ``split_thr`` (upstream's switch to a
per-class loop on many boxes: a speed choice only, accepted and not needed here).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import nms as torchvision_nms

from ..head.nanodet_plus_head import multiclass_nms as classwise_nms

NMS_CFG_KEYS = ("type", "iou_threshold", "class_agnostic", "split_thr")


def _nms_options(nms_cfg: Mapping) -> tuple[float, bool | None]:
    """(iou_threshold, class_agnostic or None when not set) of an upstream ``nms_cfg``."""
    if not isinstance(nms_cfg, Mapping):
        raise ValueError(f"nms_cfg must be a mapping such as dict(type='nms', iou_threshold=0.6), got {nms_cfg!r}")
    unknown = sorted(set(nms_cfg) - set(NMS_CFG_KEYS))
    if unknown:
        raise ValueError(f"nms_cfg: unknown keys {unknown}; valid: {list(NMS_CFG_KEYS)}")
    nms_type = nms_cfg.get("type", "nms")
    if nms_type != "nms":
        raise ValueError(f"nms_cfg type {nms_type!r} is not supported; only 'nms' (hard NMS)")
    if "iou_threshold" not in nms_cfg:
        raise ValueError("nms_cfg needs an iou_threshold, e.g. dict(type='nms', iou_threshold=0.6)")
    agnostic = nms_cfg.get("class_agnostic")
    return float(nms_cfg["iou_threshold"]), None if agnostic is None else bool(agnostic)


def multiclass_nms(multi_bboxes: torch.Tensor, multi_scores: torch.Tensor, score_thr: float, nms_cfg: Mapping,
                   max_num: int = -1, score_factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-wise NMS of one image with upstream's arguments.

    Args:
        multi_bboxes: [N, 4] boxes (x1, y1, x2, y2), one per prior, shared by all classes.
        multi_scores: [N, C + 1] scores; the last column is the background and is dropped.
        score_thr: candidates need a score above it (after ``score_factors``).
        nms_cfg: e.g. ``dict(type="nms", iou_threshold=0.6)`` (see the module docstring).
        max_num: keep at most this many detections (-1: all).
        score_factors: [N] factors multiplied into every class's score before thresholding.

    Returns:
        (dets [K, 5] as x1, y1, x2, y2, score, labels [K]), by decreasing score.
    """
    iou_threshold, class_agnostic = _nms_options(nms_cfg)
    if class_agnostic:
        raise ValueError("multiclass_nms is class-wise; for class-agnostic NMS call batched_nms(..., "
                         "class_agnostic=True) on the candidates")
    if multi_bboxes.dim() != 2 or multi_bboxes.shape[1] != 4:
        raise ValueError(f"multi_bboxes must be [N, 4] (one box per prior; per-class boxes [N, C*4] are not "
                         f"supported), got {list(multi_bboxes.shape)}")
    if multi_scores.dim() != 2 or multi_scores.shape[0] != multi_bboxes.shape[0] or multi_scores.shape[1] < 2:
        raise ValueError(f"multi_scores must be [N, C + 1] with the background last, N = {multi_bboxes.shape[0]}, "
                         f"got {list(multi_scores.shape)}")
    scores = multi_scores[:, :-1]
    if score_factors is not None:
        scores = scores * score_factors[:, None]
    return classwise_nms(multi_bboxes, scores, score_thr, iou_threshold, max_num)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, nms_cfg: Mapping,
                class_agnostic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """NMS of [N, 4] ``boxes`` apart per ``idxs`` (class), or all together when class-agnostic
    (``nms_cfg``'s ``class_agnostic`` wins over the argument, as upstream).

    Returns:
        (dets [K, 5] as x1, y1, x2, y2, score, keep [K]: indices into ``boxes``), by decreasing score.
    """
    iou_threshold, agnostic = _nms_options(nms_cfg)
    if agnostic is not None:
        class_agnostic = agnostic
    if class_agnostic:
        keep = torchvision_nms(boxes, scores, iou_threshold)
    else:
        keep = torchvision_batched_nms(boxes, scores, idxs, iou_threshold)
    return torch.cat([boxes[keep], scores[keep, None]], dim=1), keep
