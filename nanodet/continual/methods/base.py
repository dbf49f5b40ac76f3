"""The base of every continual-learning method: naive fine-tuning, with named hooks to override.

A method says only what makes it that method: what it freezes or copies when a task starts, the
extra loss terms of a batch, how batches are drawn, and what it stores when a task ends. The
loop of a task (batches, detection loss, optimizer, logging) is ``ContinualTask``'s; the task
sequence, evaluation and reports are the runner's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from ...trainer.builders import build_dataloader
from ..scenario import Scenario


@dataclass
class TaskContext:
    """What a method may know about the task being trained."""

    index: int
    scenario: Scenario
    cfg: object
    train_dataset: object = None
    task_dir: Path | None = None
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


class StudentOutputs(NamedTuple):
    preds: torch.Tensor  # raw head output [B, priors, C + 4 * (reg_max + 1)]
    towers: list | None = None  # per level: the head's feature map before gfl_cls
    features: tuple | None = None  # backbone feature maps


class ContinualMethod:
    """Naive fine-tuning: the detection loss on the current task's boxes, nothing else."""

    name = "naive"

    def __init__(self, **settings):
        self.settings = settings

    # ---------------------------------------------------------------- task start and end
    def on_task_start(self, context: TaskContext, model: torch.nn.Module):
        """Freeze parts, copy a teacher, ... before the task's first step."""

    def on_task_end(self, context: TaskContext, model: torch.nn.Module):
        """Store what later tasks need (a teacher is made at the next start, from the weights)."""

    def save_state(self, task_dir: Path):
        """Persist what ``on_task_end`` stored, so a resumed run finds it."""

    def load_state(self, task_dir: Path):
        """Read back what ``save_state`` wrote after the task whose folder is ``task_dir``."""

    # ---------------------------------------------------------------- the training step
    def forward_student(self, model, img) -> StudentOutputs:
        features = model.backbone(img)
        preds, towers = model.head.forward_with_towers(model.fpn(features))
        return StudentOutputs(preds, towers, features)

    def detection_loss(self, context: TaskContext, model, outputs: StudentOutputs, batch):
        return model.head.loss(outputs.preds, batch)

    def extra_losses(self, context: TaskContext, model, batch, outputs: StudentOutputs) -> dict:
        """Named loss terms added to the detection loss (distillation, ...)."""
        return {}

    def train_dataloader(self, context: TaskContext, cfg):
        return build_dataloader(context.train_dataset, cfg, train=True)

    # ---------------------------------------------------------------- bookkeeping
    def frozen_modules(self, model) -> list[torch.nn.Module]:
        """Modules that must stay in eval mode (their BatchNorm statistics never move)."""
        return []

    def to(self, device):
        """Move what the method holds (a teacher, a buffer) to the training device."""
        return self

    def parameters_in_memory(self, model) -> int:
        """Parameters held in memory while training: the student, plus a teacher where there is one."""
        return sum(p.numel() for p in model.parameters())

    def buffer_bytes(self) -> int:
        return 0

    def describe(self) -> dict:
        return {"method": self.name, **self.settings}
