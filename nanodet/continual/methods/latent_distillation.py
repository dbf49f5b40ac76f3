"""Latent Distillation: SID's loss with a frozen backbone shared by teacher and student.

The backbone runs once per batch, in eval mode and under no_grad; its feature maps feed both the
teacher's and the student's neck and head, and only the student's neck and head (about 0.4 M
parameters for NanoDet-Plus-m) have gradients and optimizer state. The teacher holds no backbone
of its own. (The original code ran the backbone twice, once per network, so the claimed saving
never happened.) When the backbone freezes: see ``FrozenBackbone``.
"""

from .base import student_forward
from .frozen_backbone import FrozenBackbone
from .sid import SID


class LatentDistillation(FrozenBackbone, SID):
    name = "ld"
    shares_backbone = True

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, freeze_backbone_from: int | None = None, **options):
        super().__init__(alpha=alpha, beta=beta, **options)
        self.init_frozen_backbone(freeze_backbone_from)

    def on_task_start(self, context, model):
        super().on_task_start(context, model)
        if self.teacher is not None and not self.backbone_frozen:
            raise ValueError("Latent Distillation shares a frozen backbone between teacher and student: "
                             f"freeze_backbone_from ({self.freeze_backbone_from}) must be 0 or 1")

    def forward_student(self, context, model, batch):
        return student_forward(model, batch["img"], frozen_backbone=self.backbone_frozen), batch

    def describe(self):
        return {**super().describe(), "freeze_backbone_from": self.freeze_backbone_from}
