"""Latent Distillation: SID's loss with a frozen backbone shared by teacher and student.

The backbone runs once per batch, in eval mode and under no_grad; its feature maps feed both the
teacher's and the student's neck and head, and only the student's neck and head (about 0.4 M
parameters for NanoDet-Plus-m) have gradients and optimizer state. The teacher holds no backbone
of its own. (The original code ran the backbone twice, once per network, so the claimed saving
never happened.) When the backbone freezes: see ``FrozenBackbone``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

from .frozen_backbone import FrozenBackbone
from .settings import freeze_backbone_from_setting
from .sid import SID, SIDSettings

if TYPE_CHECKING:
    import torch

    from .base import TaskContext
    from .parts import Part


@dataclasses.dataclass(frozen=True)
class LatentDistillationSettings(SIDSettings):
    freeze_backbone_from: Optional[int] = freeze_backbone_from_setting()


class LatentDistillation(SID):
    """SID's parts after a frozen backbone, which the teacher shares."""

    name = "ld"
    Settings = LatentDistillationSettings
    teacher_shares_backbone = True

    def build_parts(self) -> list[Part]:
        return [FrozenBackbone(self.settings.freeze_backbone_from), *super().build_parts()]

    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        super().on_task_start(context, model)
        if self.teacher is not None and not self.backbone_frozen:
            raise ValueError("Latent Distillation shares a frozen backbone between teacher and student: "
                             f"freeze_backbone_from ({self.settings.freeze_backbone_from}) must be 0 or 1")
