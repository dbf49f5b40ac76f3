"""The base of every continual-learning method: naive fine-tuning, with named hooks to override.

A method says only what makes it that method: what it freezes or copies when a task starts, the
extra loss terms of a batch, how batches are drawn, and what it stores when a task ends. The
loop of a task (batches, detection loss, optimizer, logging) is ``ContinualTask``'s; the task
sequence, evaluation and reports are the runner's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...trainer.builders import build_train_loader
from ...util.gt_batch import PADDED_GT_KEYS
from ..scenario import Scenario
from .pseudo_labels import add_pseudo_labels
from .settings import Settings
from .teacher import StudentOutputs, Teacher


@dataclass
class TaskContext:
    """What a method may know about the task being trained."""

    index: int
    scenario: Scenario
    cfg: object
    train_dataset: object = None
    task_dir: Path | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def new_classes(self) -> list[int]:
        return self.scenario.new_classes(self.index)

    @property
    def old_classes(self) -> list[int]:
        return self.scenario.old_classes(self.index)

    @property
    def future_classes(self) -> list[int]:
        return self.scenario.future_classes(self.index)


class ContinualMethod:
    """Naive fine-tuning: the detection loss on the current task's boxes, nothing else.

    Built from its settings as keywords (``Settings``, declared in ``settings.py``; a method's own
    in its file). Those every method has:
        pseudo_labels: a score; the teacher's old-class detections above it join each new-task
            image's boxes (in the augmented image's coordinates), except where they overlap a
            ground-truth box (IoU >= ``pseudo_label_iou``).
        drop_background: at tasks >= 1, drop the negative (background) term of the quality focal
            loss, as the original distillation configs did, so unlabeled old objects are not
            pushed towards background. Task 0 is always standard.
    """

    name = "naive"
    distills = False  # whether the loss needs the previous task's model as a teacher
    shares_backbone = False  # whether that teacher runs on the student's backbone features
    Settings = Settings

    def __init__(self, **settings):
        self.settings = self.Settings(**settings)
        self.teacher: Teacher | None = None

    # ---------------------------------------------------------------- task start and end
    def on_task_start(self, context: TaskContext, model: torch.nn.Module):
        """Freeze parts, copy the teacher, ... before the task's first step."""
        needs_teacher = self.distills or self.settings.pseudo_labels is not None
        self.teacher = Teacher(model, self.shares_backbone) if needs_teacher and context.index > 0 else None

    def on_task_end(self, context: TaskContext, model: torch.nn.Module):
        """Store what later tasks need (the teacher is made at the next start, from the weights)."""

    def save_state(self, task_dir: Path):
        """Persist what ``on_task_end`` stored, so a resumed run finds it."""

    def load_state(self, task_dir: Path):
        """Read back what ``save_state`` wrote after the task whose folder is ``task_dir``."""

    # ---------------------------------------------------------------- the training step
    def forward_student(self, context: TaskContext, model, batch) -> tuple[StudentOutputs, dict]:
        """The student's outputs, and the batch the losses see (a method may extend it)."""
        return student_forward(model, batch["img"]), batch

    def forward_teacher(self, img, student: StudentOutputs) -> StudentOutputs | None:
        if self.teacher is None:
            return None
        return self.teacher(features=student.features) if self.shares_backbone else self.teacher(img)

    def detection_loss(self, context: TaskContext, model, outputs: StudentOutputs, batch):
        if self.settings.drop_background and context.index > 0:
            return model.head.loss(outputs.preds, batch, background=False)
        return model.head.loss(outputs.preds, batch)

    def extra_losses(self, context: TaskContext, model, batch, outputs: StudentOutputs,
                     teacher: StudentOutputs | None) -> dict:
        """Named loss terms added to the detection loss (distillation, ...)."""
        return {}

    def add_pseudo_labels(self, context: TaskContext, model, batch, teacher: StudentOutputs):
        if self.settings.pseudo_labels is None or teacher is None:
            return batch
        return add_pseudo_labels(model.head, batch, teacher.preds, context.old_classes,
                                 self.settings.pseudo_labels, self.settings.pseudo_label_iou)

    def train_dataloader(self, context: TaskContext, cfg, device):
        return build_train_loader(context.train_dataset, cfg, device, seed=context.seed + context.index)

    def step_capturable(self) -> bool:
        """Whether a training step is the same work every time, so that it can be replayed as one
        CUDA graph (``device.cuda_graph``): pseudo-labels build per-image box lists on the host."""
        return self.settings.pseudo_labels is None

    # ---------------------------------------------------------------- bookkeeping
    def frozen_modules(self, model) -> list[torch.nn.Module]:
        """Modules that must stay in eval mode (their BatchNorm statistics never move)."""
        return []

    def to(self, device, memory_format=torch.preserve_format):
        """Move what the method holds (the teacher, a buffer) to the training device, in the
        student's memory format (a channels_last student fed an NCHW teacher pays conversions)."""
        if self.teacher is not None:
            self.teacher.to(device, memory_format)
        return self

    def parameters_in_memory(self, model) -> int:
        """Parameters held in memory while training: the student, plus the teacher if any."""
        student = sum(p.numel() for p in model.parameters())
        return student + (self.teacher.num_parameters() if self.teacher is not None else 0)

    def buffer_bytes(self) -> int:
        return 0

    def run_name(self) -> str:
        """The method's name plus every setting that differs from its default, so that runs
        with other settings get their own default directory (``ld``, ``ld_pseudo_labels0.5``)."""
        return "_".join([self.name, *self.settings.changed()])

    def describe(self) -> dict:
        """The method and its settings, as run.json and results.json record them."""
        return {"method": self.name, **self.settings.shown()}


def student_forward(model, img, frozen_backbone: bool = False) -> StudentOutputs:
    """Backbone, neck and head; a frozen backbone runs without building a graph."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_backbone):
        features = model.backbone(img)
    preds, towers = model.head.forward_with_towers(model.fpn(features))
    return StudentOutputs(preds, towers, features)


def with_ground_truth(batch, boxes, labels):
    """The batch with other per-image boxes and labels; GT padded on the device by the GPU
    augmentation no longer matches them, so it is dropped (the head pads again)."""
    batch = {k: v for k, v in batch.items() if k not in PADDED_GT_KEYS}
    return {**batch, "gt_bboxes": boxes, "gt_labels": labels}
