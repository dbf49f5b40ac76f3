"""A backbone frozen from a given task on: held by Latent Distillation and Latent Replay.

Frozen means no gradients, no optimizer state and eval mode, so its BatchNorm statistics never
move (the original left it in train mode, so the statistics drifted towards each new task). The
task it freezes from is a setting; by default task 0 when pretrained backbone weights are loaded
(the paper) and task 1 otherwise (a random backbone must first learn at task 0).

While frozen, a copy of it with its BatchNorms folded into its convolutions computes the
features (``backbone``): a frozen BatchNorm only applies its running statistics, so folding saves
a kernel and a pass over each feature map, with the same outputs up to rounding
(model/module/fold_bn.py). The model keeps its own backbone, unfolded, for checkpoints and
evaluation; the copy is not counted in the parameters a method reports (the paper's count).
With ``device.compile`` the model's backbone runs, compiled (the compiler fuses them itself).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional

import torch

from ...model.module.fold_bn import fold_batchnorm
from .parts import Part

if TYPE_CHECKING:
    from ...util.config import CfgNode
    from .base import TaskContext


class FrozenBackbone(Part):
    def __init__(self, from_task: Optional[int] = None):
        self.from_task = from_task
        self.frozen = False  # during the current task
        self.folded: torch.nn.Module | None = None  # runs the frozen backbone (see above)

    def freeze_task(self, cfg: CfgNode) -> int:
        """The first task trained with the backbone frozen."""
        if self.from_task is not None:
            return self.from_task
        return 0 if cfg.model.arch.backbone.get("pretrain", False) else 1

    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        self.frozen = context.index >= self.freeze_task(context.cfg)
        model.backbone.requires_grad_(not self.frozen)
        self.folded = None
        if self.frozen and not context.cfg.device.get("compile"):
            self.folded = copy.deepcopy(model.backbone).eval().requires_grad_(False)
            fold_batchnorm(self.folded)

    def backbone(self, model: torch.nn.Module) -> torch.nn.Module:
        """What computes the backbone features this task: the folded copy while frozen."""
        return self.folded if self.folded is not None else model.backbone

    def frozen_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [model.backbone] if self.frozen else []

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> None:
        if self.folded is not None:
            self.folded.to(device=device, memory_format=memory_format)
