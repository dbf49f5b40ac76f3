"""A continual-learning method: naive fine-tuning plus the parts that make it another method.

A method is a list of parts (``parts.py``): a frozen backbone, distillation terms, pseudo-labels,
a replay buffer... Each part says only what it changes (a loss term, a frozen module, the batches,
what is stored after a task); the method calls every part's hooks in order and owns the teacher,
the previous task's model, made when a part needs one. The named methods (SID, LwF, Latent
Distillation, Replay, Latent Replay) are presets: a ``Settings`` dataclass and the parts built
from it (``build_parts``). Every method may also hold the optional parts its settings turn on:
pseudo-labels, no background term, ERD, a replay buffer, box replay (``optional_parts``), so that combinations
such as Latent Distillation with a replay buffer need no new class.

The loop of a task (batches, detection loss, optimizer, logging) is ``ContinualTask``'s; the task
sequence, evaluation and reports are the runner's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from ...trainer.builders import build_train_loader
from ...util.gt_batch import PADDED_GT_KEYS
from ..scenario import Scenario
from .box_replay import BoxReplay
from .buffer import ImageReplay
from .erd import ElasticResponseDistillation
from .frozen_backbone import FrozenBackbone
from .parts import DropBackground, Part
from .pseudo_labels import PseudoLabels
from .settings import Settings
from .teacher import StudentOutputs, Teacher, class_mask

if TYPE_CHECKING:
    import numpy as np

    from ...util.config import CfgNode


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
    """Naive fine-tuning: the detection loss on the current task's boxes, plus the parts.

    Built from its settings as keywords (``Settings``, declared in ``settings.py``; a preset's own
    in its file); those every method has turn on the optional parts (``optional_parts``).
    """

    name = "naive"
    Settings = Settings
    teacher_shares_backbone = False  # the teacher runs on the student's (frozen) backbone features

    def __init__(self, **settings: Any):
        self.settings = self.Settings(**settings)
        self.parts: list[Part] = self.build_parts()
        self.parts += self.optional_parts()  # which may build on the method's own (``part``)
        self.teacher: Teacher | None = None

    def build_parts(self) -> list[Part]:
        """What makes this method the method it is (naive: nothing)."""
        return []

    def optional_parts(self) -> list[Part]:
        """The parts the common settings turn on, after the method's own."""
        settings, parts = self.settings, []
        if settings.buffer_size is not None:
            parts.append(self.buffer_part())
        if settings.pseudo_labels is not None:
            parts.append(PseudoLabels(settings.pseudo_labels, settings.pseudo_label_iou))
        if settings.drop_background:
            parts.append(DropBackground())
        if settings.erd:
            parts.append(ElasticResponseDistillation())
        if settings.box_replay is not None:
            parts.append(BoxReplay(settings.box_replay, settings.box_replay_side, settings.box_replay_per_image))
        return parts

    def buffer_part(self) -> Part:
        """The replay buffer ``buffer_size`` turns on: earlier tasks' images."""
        return ImageReplay(self.settings.buffer_size, self.settings.buffer_policy, self.settings.label_propagation)

    def part(self, kind: type) -> Part | None:
        """The method's part of this kind, if it has one."""
        return next((p for p in self.parts if isinstance(p, kind)), None)

    @property
    def backbone_frozen(self) -> bool:
        """Whether the backbone is frozen during the current task."""
        frozen = self.part(FrozenBackbone)
        return frozen is not None and frozen.frozen

    def feature_backbone(self, model: torch.nn.Module) -> torch.nn.Module:
        """What computes the student's backbone features: a frozen backbone's folded copy, else
        the model's backbone."""
        frozen = self.part(FrozenBackbone)
        return frozen.backbone(model) if frozen is not None else model.backbone

    # ---------------------------------------------------------------- task start and end
    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        """Every part's start (freezing...), then the teacher if a part needs one."""
        for part in self.parts:
            part.on_task_start(context, model)
        needs_teacher = any(part.needs_teacher for part in self.parts)
        self.teacher = Teacher(model, self.teacher_shares_backbone) if needs_teacher and context.index > 0 else None

    def on_task_end(self, context: TaskContext, model: torch.nn.Module) -> None:
        """Every part stores what later tasks need (the teacher is made at the next start)."""
        for part in self.parts:
            part.on_task_end(context, model)

    def save_state(self, task_dir: Path) -> None:
        for part in self.parts:
            part.save_state(task_dir)

    def load_state(self, task_dir: Path) -> None:
        for part in self.parts:
            part.load_state(task_dir)

    # ---------------------------------------------------------------- the training step
    def augment_batch(self, context: TaskContext, batch: dict) -> dict:
        """The batch after every part's augmentation (box replay's pasted crops)."""
        for part in self.parts:
            batch = part.augment_batch(context, batch)
        return batch

    def forward_student(self, context: TaskContext, model: torch.nn.Module,
                        batch: dict) -> tuple[StudentOutputs, dict]:
        """The student's outputs, and the batch the losses see (a part may extend it)."""
        for part in self.parts:
            own = part.forward_student(self, context, model, batch)
            if own is not None:
                return own
        return student_forward(model, batch["img"], frozen_backbone=self.backbone_frozen,
                               backbone=self.feature_backbone(model)), batch

    def forward_teacher(self, img: torch.Tensor, student: StudentOutputs) -> StudentOutputs | None:
        if self.teacher is None:
            return None
        return self.teacher(features=student.features) if self.teacher.share_backbone else self.teacher(img)

    def extend_targets(self, context: TaskContext, model: torch.nn.Module, batch: dict,
                       teacher: StudentOutputs | None) -> dict:
        """The batch with what the parts add to its ground truth (pseudo-labels)."""
        for part in self.parts:
            batch = part.extend_targets(context, model, batch, teacher)
        return batch

    def detection_loss(self, context: TaskContext, model: torch.nn.Module, outputs: StudentOutputs,
                       batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kept = self.background_classes(context)
        if kept is None:
            return model.head.loss(outputs.preds, batch)
        if not kept:
            return model.head.loss(outputs.preds, batch, background=False)
        return model.head.loss(outputs.preds, batch, background=class_mask(kept, model.head.num_classes,
                                                                            outputs.preds.device))

    def background_classes(self, context: TaskContext) -> frozenset[int] | None:
        """The classes whose background term the detection loss keeps (None: all), those every
        part keeps: none with ``drop_background``, the new ones with ERD."""
        kept = None
        for part in self.parts:
            own = part.background_classes(context)
            if own is not None:
                kept = own if kept is None else kept & own
        return kept

    def extra_losses(self, context: TaskContext, model: torch.nn.Module, batch: dict, outputs: StudentOutputs,
                     teacher: StudentOutputs | None) -> dict:
        """Named loss terms added to the detection loss, the parts' in order."""
        terms = {}
        for part in self.parts:
            terms.update(part.losses(context, model, batch, outputs, teacher))
        return terms

    def train_dataloader(self, context: TaskContext, cfg: CfgNode,
                         device: torch.device | str) -> Iterable[dict[str, Any]]:
        for part in self.parts:
            loader = part.train_dataloader(context, cfg, device)
            if loader is not None:
                return loader
        return build_train_loader(context.train_dataset, cfg, device, seed=context.seed + context.index)

    def step_capturable(self) -> bool:
        """Whether a training step is the same work every time, so that it can be replayed as one
        CUDA graph (``device.cuda_graph``): not when a part decides on the host per step."""
        return all(part.capturable for part in self.parts)

    # ---------------------------------------------------------------- bookkeeping
    def frozen_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """Modules that must stay in eval mode (their BatchNorm statistics never move)."""
        return [module for part in self.parts for module in part.frozen_modules(model)]

    def to(self, device: torch.device | str,
           memory_format: torch.memory_format = torch.preserve_format) -> ContinualMethod:
        """Move what the method holds (the teacher, a buffer) to the training device, in the
        student's memory format (a channels_last student fed an NCHW teacher pays conversions)."""
        if self.teacher is not None:
            self.teacher.to(device, memory_format)
        for part in self.parts:
            part.to(device, memory_format)
        return self

    def parameters_in_memory(self, model: torch.nn.Module) -> int:
        """Parameters held in memory while training: the student, plus the teacher if any."""
        student = sum(p.numel() for p in model.parameters())
        return student + (self.teacher.num_parameters() if self.teacher is not None else 0)

    def buffer_bytes(self) -> int:
        return sum(part.buffer_bytes() for part in self.parts)

    def run_name(self) -> str:
        """The method's name plus every setting that differs from its default, so that runs
        with other settings get their own default directory (``ld``, ``ld_pseudo_labels0.5``)."""
        return "_".join([self.name, *self.settings.changed()])

    def describe(self) -> dict:
        """The method and its settings, as run.json and results.json record them."""
        return {"method": self.name, **self.settings.shown()}


def student_forward(model: torch.nn.Module, img: torch.Tensor, frozen_backbone: bool = False,
                    backbone: torch.nn.Module | None = None) -> StudentOutputs:
    """Backbone (``backbone``, default the model's), neck and head; a frozen backbone runs
    without building a graph."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_backbone):
        features = (backbone if backbone is not None else model.backbone)(img)
    preds, towers = model.head.forward_with_towers(model.fpn(features))
    return StudentOutputs(preds, towers, features)


def with_ground_truth(batch: dict, boxes: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """The batch with other per-image boxes and labels; GT padded on the device by the GPU
    augmentation no longer matches them, so it is dropped (the head pads again)."""
    batch = {k: v for k, v in batch.items() if k not in PADDED_GT_KEYS}
    return {**batch, "gt_bboxes": boxes, "gt_labels": labels}
