"""Latent Distillation: SID's loss with a frozen backbone shared by teacher and student.

The backbone runs once per batch, in eval mode and under no_grad; its feature maps feed both the
teacher's and the student's neck and head, and only the student's neck and head (about 0.4 M
parameters for NanoDet-Plus-m) have gradients and optimizer state. The teacher holds no backbone
of its own. (The original code ran the backbone twice, once per network, so the claimed saving
never happened.) When the backbone freezes: see ``FrozenBackbone``.
"""

import dataclasses
from typing import Optional

from .base import student_forward
from .frozen_backbone import FrozenBackbone
from .settings import freeze_backbone_from_setting
from .sid import SID, SIDSettings


@dataclasses.dataclass(frozen=True)
class LatentDistillationSettings(SIDSettings):
    freeze_backbone_from: Optional[int] = freeze_backbone_from_setting()


class LatentDistillation(FrozenBackbone, SID):
    name = "ld"
    shares_backbone = True
    Settings = LatentDistillationSettings

    def on_task_start(self, context, model):
        super().on_task_start(context, model)
        if self.teacher is not None and not self.backbone_frozen:
            raise ValueError("Latent Distillation shares a frozen backbone between teacher and student: "
                             f"freeze_backbone_from ({self.settings.freeze_backbone_from}) must be 0 or 1")

    def forward_student(self, context, model, batch):
        return student_forward(model, batch["img"], frozen_backbone=self.backbone_frozen), batch
