"""Evaluators by name: COCO-style AP@[.5:.95] (pycocotools) and VOC AP@0.5 (numpy)."""

import copy

from .coco_detection import CocoDetectionEvaluator
from .voc_detection import VOCDetectionEvaluator

EVALUATORS = {
    "CocoDetectionEvaluator": CocoDetectionEvaluator,
    "VOCDetectionEvaluator": VOCDetectionEvaluator,
}


def build_evaluator(evaluator_cfg, dataset):
    """Build the evaluator named by ``evaluator_cfg.name``; the other keys are its arguments.

    ``evaluator_cfg`` is the config's ``evaluator`` node (dict-like), e.g.
    ``{name: CocoDetectionEvaluator, save_key: mAP}``.
    """
    kwargs = dict(copy.deepcopy(evaluator_cfg))
    name = kwargs.pop("name", None)
    if name not in EVALUATORS:
        raise ValueError(f"evaluator.name: unknown evaluator {name!r}; "
                         f"choose one of {sorted(EVALUATORS)}")
    return EVALUATORS[name](dataset, **kwargs)


__all__ = ["EVALUATORS", "build_evaluator", "CocoDetectionEvaluator", "VOCDetectionEvaluator"]
