"""Evaluators by name: COCO-style AP@[.5:.95] (pycocotools) and VOC AP@0.5 (numpy)."""

from __future__ import annotations

from typing import Any, Mapping, Union

from ..util.config import register_components
from ..util.registry import build_from_cfg
from .coco_detection import CocoDetectionEvaluator, EvalDataset
from .voc_detection import VOCDetectionEvaluator

EVALUATORS = {
    "CocoDetectionEvaluator": CocoDetectionEvaluator,
    "VOCDetectionEvaluator": VOCDetectionEvaluator,
}
register_components({"evaluator": EVALUATORS})  # what the config checker checks ``evaluator`` against


def build_evaluator(evaluator_cfg: Mapping[str, Any],
                    dataset: EvalDataset) -> Union[CocoDetectionEvaluator, VOCDetectionEvaluator]:
    """Build the evaluator named by ``evaluator_cfg.name``; the other keys are its arguments.

    ``evaluator_cfg`` is the config's ``evaluator`` node (dict-like), e.g.
    ``{name: CocoDetectionEvaluator, save_key: mAP}``.
    """
    return build_from_cfg(evaluator_cfg, EVALUATORS, "evaluator", dataset)


__all__ = ["EVALUATORS", "build_evaluator", "CocoDetectionEvaluator", "VOCDetectionEvaluator"]
