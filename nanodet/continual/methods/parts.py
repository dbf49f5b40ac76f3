"""The parts a continual-learning method is made of, and the hooks through which they act.

A method (``ContinualMethod``) holds a list of parts and calls each hook on every part in order.
A part overrides only the hooks it needs; every default does nothing. The parts so far:

* ``FrozenBackbone`` (frozen_backbone.py): the backbone frozen from a given task on;
* ``LogitDistillation``, ``FeatureDistillation`` (distillation.py): loss terms against the teacher;
* ``PseudoLabels`` (pseudo_labels.py): the teacher's old-class detections join the ground truth;
* ``DropBackground`` (below): no background term at tasks >= 1;
* ``ImageReplay`` (buffer.py) and ``LatentBuffer`` (latent_replay.py): a buffer of earlier tasks'
  images or feature maps, and the batches drawn from it;
* ``ElasticResponseDistillation`` (erd.py): ERD's terms at the teacher's elastically chosen locations;
* ``BoxReplay`` (box_replay.py): old-class object crops pasted into the batches' images.

The teacher (the previous task's model) is the method's, made when a part says it needs one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

if TYPE_CHECKING:
    from ...util.config import CfgNode
    from .base import ContinualMethod, TaskContext
    from .teacher import StudentOutputs


class Part:
    """One piece of a method; override what it does, leave the rest."""

    needs_teacher = False  # the previous task's model must run beside the student
    capturable = True  # its per-step work is the same every step (a CUDA graph can replay it)

    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        """Before the task's first step (the teacher is made after every part's start)."""

    def on_task_end(self, context: TaskContext, model: torch.nn.Module) -> None:
        """After the task's last step: store what later tasks need."""

    def save_state(self, task_dir: Path) -> None:
        """Persist what ``on_task_end`` stored, so that a resumed run finds it."""

    def load_state(self, task_dir: Path) -> None:
        """Read back what ``save_state`` wrote after the task whose folder is ``task_dir``."""

    def augment_batch(self, context: TaskContext, batch: dict) -> dict:
        """The batch as the student and the teacher see it (its images and ground truth), before
        the forward pass; the input batch is not modified."""
        return batch

    def forward_student(self, method: ContinualMethod, context: TaskContext, model: torch.nn.Module,
                        batch: dict) -> tuple[StudentOutputs, dict] | None:
        """``(StudentOutputs, batch)`` when this part runs the student its own way, else None."""
        return None

    def extend_targets(self, context: TaskContext, model: torch.nn.Module, batch: dict,
                       teacher: StudentOutputs | None) -> dict:
        """The batch with what this part adds to its ground truth (``teacher``: its outputs or None)."""
        return batch

    def background_classes(self, context: TaskContext) -> frozenset[int] | None:
        """The classes whose background (negative) term the classification loss keeps; None:
        every class (the method keeps the classes that every part keeps)."""
        return None

    def losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, student: StudentOutputs,
               teacher: StudentOutputs | None) -> dict:
        """Named loss terms added to the detection loss."""
        return {}

    def train_dataloader(self, context: TaskContext, cfg: CfgNode,
                         device: torch.device | str) -> Iterable[dict[str, Any]] | None:
        """The task's batches when this part draws them (a replay buffer), else None."""
        return None

    def frozen_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """Modules that must stay in eval mode (their BatchNorm statistics never move)."""
        return []

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> None:
        """Move what the part holds to the training device."""

    def buffer_bytes(self) -> int:
        """Bytes of what the part keeps from earlier tasks."""
        return 0


class DropBackground(Part):
    """At tasks >= 1, no negative (background) term in the quality focal loss, as the original
    distillation configs did, so that unlabelled old objects are not pushed to background.
    Task 0 is always standard."""

    def background_classes(self, context: TaskContext) -> frozenset[int] | None:
        return None if context.index == 0 else frozenset()
