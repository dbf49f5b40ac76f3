"""Elastic Response Distillation (ERD; Feng et al., CVPR 2022) for NanoDet-Plus's GFL-style head.

At tasks >= 1 the teacher (the previous task's model) sees each batch too. As the authors' code
does it (github.com/Hi-FT/ERD, GFL on mmdetection), per image:

- classification: the locations whose teacher top old-class score (sigmoid) is above that
  image's mean plus twice the standard deviation ("elastic": the threshold follows each image's
  scores); there, the L2 distance between the student's and the teacher's old-class logits,
  averaged over classes and locations; weight 1;
- regression: the locations whose largest box-distribution logit is above the mean plus twice
  the standard deviation of those, then one per object; there, the KL divergence from the
  teacher's to the student's distribution over each box side's ``reg_max + 1`` bins at
  temperature 10 (averaged over bins, times T squared), averaged over the four sides, weighted
  by the student's top old-class score (detached), summed over the locations; weight 0.25;
- the detection loss trains the old classes' outputs only at their own positives (no
  background term for them), since they have no labels in the new task's images.

Where this differs from the authors' code: their "one per object" is an NMS (IoU 0.005) of the
teacher's boxes at the selected locations; here it is the locations whose teacher top old-class
score is the largest of their 3x3 neighbourhood on their level, which needs no data-dependent
shapes, so the step stays one CUDA graph. Their terms are summed over the 2 images of a GPU's
batch; here they are averaged over the batch's images (locations, for classification), so
they do not grow with the batch size.
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


def elastic_selection(values: torch.Tensor, std_factor: float = 2.0) -> torch.Tensor:
    """``[B, N]`` values per location -> a boolean mask of the locations above each image's mean
    + ``std_factor`` standard deviations (the sample standard deviation, as torch's default)."""
    mean = values.mean(dim=1, keepdim=True)
    return values > mean + std_factor * values.std(dim=1, keepdim=True)


def local_peaks(values: torch.Tensor, level_shapes: list[tuple[int, int]]) -> torch.Tensor:
    """``[B, N]`` values of the flattened levels (``level_shapes``: each level's height and width,
    in the head's order) -> a mask of the locations that hold the largest value of their 3x3
    neighbourhood on their level (ties: all of them)."""
    peaks, start = [], 0
    for height, width in level_shapes:
        level = values[:, start:start + height * width].reshape(-1, 1, height, width)
        peak = level >= F.max_pool2d(level, 3, stride=1, padding=1)
        peaks.append(peak.reshape(values.shape[0], -1))
        start += height * width
    if start != values.shape[1]:
        raise ValueError(f"the levels {level_shapes} hold {start} locations, the outputs {values.shape[1]}")
    return torch.cat(peaks, dim=1)


def erd_losses(student_preds: torch.Tensor, teacher_preds: torch.Tensor, old_classes: list[int], num_classes: int,
               reg_max: int, level_shapes: list[tuple[int, int]],
               temperature: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification, regression) ERD terms of raw head outputs ``[B, N, C + 4 * (reg_max + 1)]``,
    unweighted."""
    student_preds, teacher_preds = student_preds.float(), teacher_preds.float().detach()
    old = class_index(tuple(old_classes), student_preds.device)  # made once: no copy inside a captured step
    teacher_logits = teacher_preds[..., :num_classes].index_select(-1, old)
    student_logits = student_preds[..., :num_classes].index_select(-1, old)
    teacher_top = teacher_logits.sigmoid().amax(dim=-1)  # [B, N]

    cls_selected = elastic_selection(teacher_top).float()
    squared = ((student_logits - teacher_logits) ** 2).mean(dim=-1)
    cls_term = (squared * cls_selected).sum() / cls_selected.sum().clamp(min=1.0)

    bins = reg_max + 1
    teacher_dist, student_dist = teacher_preds[..., num_classes:], student_preds[..., num_classes:]
    reg_selected = elastic_selection(teacher_dist.amax(dim=-1)) & local_peaks(teacher_top, level_shapes)
    weight = student_logits.detach().sigmoid().amax(dim=-1) * reg_selected  # [B, N]
    shape = (*student_preds.shape[:2], 4, bins)
    teacher_log = F.log_softmax(teacher_dist.reshape(shape) / temperature, dim=-1)
    student_log = F.log_softmax(student_dist.reshape(shape) / temperature, dim=-1)
    kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="none").mean(dim=-1) * temperature ** 2
    reg_term = (kl.mean(dim=-1) * weight).sum() / student_preds.shape[0]
    return cls_term, reg_term


class ElasticResponseDistillation(Part):
    """ERD's two terms against the teacher, and no background term for the old classes (module
    docstring); nothing at task 0."""

    needs_teacher = True

    def __init__(self, cls_weight: float = 1.0, reg_weight: float = 0.25, temperature: float = 10.0):
        self.cls_weight, self.reg_weight, self.temperature = cls_weight, reg_weight, temperature

    def background_classes(self, context: TaskContext) -> frozenset[int] | None:
        if context.index == 0:
            return None
        return frozenset(range(len(context.scenario.class_names))) - frozenset(context.old_classes)

    def losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, student: StudentOutputs,
               teacher: StudentOutputs | None) -> dict:
        if teacher is None or not context.old_classes:
            return {}
        head = model.head
        levels = head.featmap_sizes(*batch["img"].shape[2:])
        cls_term, reg_term = erd_losses(student.preds, teacher.preds, context.old_classes, head.num_classes,
                                        head.reg_max, levels, self.temperature)
        return {"loss_erd_cls": self.cls_weight * cls_term, "loss_erd_reg": self.reg_weight * reg_term}
