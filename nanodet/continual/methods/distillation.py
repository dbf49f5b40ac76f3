"""Distillation terms against the teacher (the previous task's model), as parts of a method.

Both are MSE terms on raw network outputs (``teacher.py`` has the functions); at task 0 there is
no teacher and they add nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .parts import Part
from .teacher import feature_distillation, logit_distillation

if TYPE_CHECKING:
    import torch

    from .base import TaskContext
    from .teacher import StudentOutputs

ALL_CHANNELS = "all"  # every class logit and distribution logit of every prior (LwF)
NOT_NEW_CLASSES = "not new"  # the class logits of old and future classes (SID, LD)


class LogitDistillation(Part):
    """``weight * MSE(S(x), T(x))`` over the head's raw output: every channel, or only the class
    logits of every class but the current task's (the new labels teach those)."""

    needs_teacher = True

    def __init__(self, weight: float, channels: str = ALL_CHANNELS, name: str = "loss_logit_distill"):
        if channels not in (ALL_CHANNELS, NOT_NEW_CLASSES):
            raise ValueError(f"logit distillation channels must be {ALL_CHANNELS!r} or {NOT_NEW_CLASSES!r}, "
                             f"got {channels!r}")
        self.weight, self.channels, self.name = weight, channels, name

    def distilled_classes(self, context: TaskContext) -> list[int] | None:
        """The distilled class logits: old and future classes; None: every channel."""
        if self.channels == ALL_CHANNELS:
            return None
        return sorted(context.old_classes + context.future_classes)

    def losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, student: StudentOutputs,
               teacher: StudentOutputs | None) -> dict:
        if teacher is None:
            return {}
        distilled = self.distilled_classes(context)
        return {self.name: self.weight * logit_distillation(student.preds, teacher.preds, distilled)}


class FeatureDistillation(Part):
    """``weight * sum over levels of MSE(head tower output of S, of T)``."""

    needs_teacher = True

    def __init__(self, weight: float, name: str = "loss_feature_distill"):
        self.weight, self.name = weight, name

    def losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, student: StudentOutputs,
               teacher: StudentOutputs | None) -> dict:
        if teacher is None:
            return {}
        return {self.name: self.weight * feature_distillation(student.towers, teacher.towers)}
