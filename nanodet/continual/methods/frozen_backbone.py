"""A backbone frozen from a given task on: held by Latent Distillation and Latent Replay.

Frozen means no gradients, no optimizer state and eval mode, so its BatchNorm statistics never
move (the original left it in train mode, so the statistics drifted towards each new task). The
task it freezes from is a setting; by default task 0 when pretrained backbone weights are loaded
(the paper) and task 1 otherwise (a random backbone must first learn at task 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from .parts import Part

if TYPE_CHECKING:
    from ...util.config import CfgNode
    from .base import TaskContext


class FrozenBackbone(Part):
    def __init__(self, from_task: Optional[int] = None):
        self.from_task = from_task
        self.frozen = False  # during the current task

    def freeze_task(self, cfg: CfgNode) -> int:
        """The first task trained with the backbone frozen."""
        if self.from_task is not None:
            return self.from_task
        return 0 if cfg.model.arch.backbone.get("pretrain", False) else 1

    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        self.frozen = context.index >= self.freeze_task(context.cfg)
        model.backbone.requires_grad_(not self.frozen)

    def frozen_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [model.backbone] if self.frozen else []
