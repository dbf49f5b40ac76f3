"""Elastic Response Distillation (ERD; Feng et al., CVPR 2022) for NanoDet-Plus's GFL-style head.

At tasks >= 1 the teacher (the previous task's model) sees each batch too. Per image, the
locations whose top old-class score from the teacher is above that image's mean plus twice the
standard deviation of those scores are selected ("elastic": the threshold follows each image's
scores). At the selected locations:

- classification: the L2 distance between the student's and the teacher's old-class scores
  (sigmoid, the quality scores the head is trained for), summed over the old classes;
- regression: the KL divergence from the teacher's to the student's distribution over each box
  side's ``reg_max + 1`` bins, at temperature ``temperature`` (scaled by its square), averaged
  over the four sides.

Each term is averaged over the selected locations of the batch. Where this differs from the
paper: the paper distils regression at the teacher's boxes kept after NMS among the selected
locations; here regression is distilled at the same elastically selected locations, which
keeps the training step free of data-dependent shapes (it stays one CUDA graph). The weights
(1 and 1) and the temperature (2) are this implementation's defaults; they were not checked
against the paper's values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .parts import Part
from .teacher import class_index

if TYPE_CHECKING:
    from .base import TaskContext
    from .teacher import StudentOutputs


def elastic_selection(top_scores: torch.Tensor, std_factor: float = 2.0) -> torch.Tensor:
    """``[B, N]`` top old-class scores -> a boolean mask of the locations above each image's
    mean + ``std_factor`` standard deviations (population standard deviation)."""
    mean = top_scores.mean(dim=1, keepdim=True)
    std = top_scores.std(dim=1, keepdim=True, unbiased=False)
    return top_scores > mean + std_factor * std


def erd_losses(student_preds: torch.Tensor, teacher_preds: torch.Tensor, old_classes: list[int], num_classes: int,
               reg_max: int, temperature: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification, regression) ERD terms of raw head outputs ``[B, N, C + 4 * (reg_max + 1)]``."""
    student_preds, teacher_preds = student_preds.float(), teacher_preds.float().detach()
    old = class_index(tuple(old_classes), student_preds.device)  # made once: no copy inside a captured step
    teacher_scores = teacher_preds[..., :num_classes].index_select(-1, old).sigmoid()
    student_scores = student_preds[..., :num_classes].index_select(-1, old).sigmoid()
    selected = elastic_selection(teacher_scores.amax(dim=-1)).float()  # [B, N]
    count = selected.sum().clamp(min=1.0)
    cls_term = (((student_scores - teacher_scores) ** 2).sum(dim=-1) * selected).sum() / count
    bins = reg_max + 1
    shape = (*student_preds.shape[:2], 4, bins)
    teacher_log = F.log_softmax(teacher_preds[..., num_classes:].reshape(shape) / temperature, dim=-1)
    student_log = F.log_softmax(student_preds[..., num_classes:].reshape(shape) / temperature, dim=-1)
    kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="none").sum(dim=-1).mean(dim=-1)
    reg_term = (kl * selected).sum() / count * temperature ** 2
    return cls_term, reg_term


class ElasticResponseDistillation(Part):
    """ERD's two terms against the teacher (module docstring); nothing at task 0."""

    needs_teacher = True

    def __init__(self, cls_weight: float = 1.0, reg_weight: float = 1.0, temperature: float = 2.0):
        self.cls_weight, self.reg_weight, self.temperature = cls_weight, reg_weight, temperature

    def losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, student: StudentOutputs,
               teacher: StudentOutputs | None) -> dict:
        if teacher is None or not context.old_classes:
            return {}
        head = model.head
        cls_term, reg_term = erd_losses(student.preds, teacher.preds, context.old_classes, head.num_classes,
                                        head.reg_max, self.temperature)
        return {"loss_erd_cls": self.cls_weight * cls_term, "loss_erd_reg": self.reg_weight * reg_term}
