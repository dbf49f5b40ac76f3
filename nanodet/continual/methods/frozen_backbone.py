"""A backbone frozen from a given task on: shared by Latent Distillation and Latent Replay.

Frozen means no gradients, no optimizer state and eval mode, so its BatchNorm statistics never
move (the original left it in train mode, so the statistics drifted towards each new task). The
task it freezes from is a setting; by default task 0 when pretrained backbone weights are loaded
(the paper) and task 1 otherwise (a random backbone must first learn at task 0).
"""

from __future__ import annotations


class FrozenBackbone:
    """Mixin for a ContinualMethod whose settings have ``freeze_backbone_from``."""

    backbone_frozen = False  # during the current task

    def freeze_task(self, cfg) -> int:
        if self.settings.freeze_backbone_from is not None:
            return self.settings.freeze_backbone_from
        return 0 if cfg.model.arch.backbone.get("pretrain", False) else 1

    def on_task_start(self, context, model):
        self.backbone_frozen = context.index >= self.freeze_task(context.cfg)
        model.backbone.requires_grad_(not self.backbone_frozen)
        super().on_task_start(context, model)

    def frozen_modules(self, model):
        return [model.backbone] if self.backbone_frozen else []
