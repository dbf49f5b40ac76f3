"""The frozen teacher: a copy of the model at the end of the previous task.

Always in eval mode, without gradients, and run under ``torch.no_grad()``, its BatchNorms folded
into its convolutions. With
``share_backbone`` (Latent Distillation) it holds no backbone of its own: it runs its neck and
head on the student's (frozen, identical) backbone features, so the backbone runs once per step
and its parameters are held in memory once.
"""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ...model.module.fold_bn import fold_batchnorm


class StudentOutputs(NamedTuple):
    """What a forward pass of the detector gives the losses."""

    preds: torch.Tensor  # raw head output [B, priors, C + 4 * (reg_max + 1)]
    towers: list | None = None  # per level: the head's feature map before gfl_cls
    features: tuple | None = None  # backbone feature maps


class Teacher:
    def __init__(self, model: torch.nn.Module, share_backbone: bool = False):
        self.share_backbone = share_backbone
        backbone = model.backbone
        if share_backbone:  # copy everything but the backbone
            model.backbone = None
            try:
                self.model = copy.deepcopy(model)
            finally:
                model.backbone = backbone
        else:
            self.model = copy.deepcopy(model)
        self.model.eval().requires_grad_(False)
        # The memory a method reports is the paper's: a copy of the model (folding below saves
        # about 1% of it, an implementation detail that would only blur the comparison).
        self._parameters = sum(p.numel() for p in self.model.parameters())
        # Its BatchNorms only apply running statistics: folded into the convolutions, a kernel and
        # a pass over each feature map fewer, the same outputs up to rounding (fold_bn.py).
        fold_batchnorm(self.model)

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> Teacher:
        self.model.to(device=device, memory_format=memory_format)
        return self

    def num_parameters(self) -> int:
        """The parameters of the model copied (before its BatchNorms were folded)."""
        return self._parameters

    @torch.no_grad()
    def __call__(self, img: torch.Tensor | None = None,
                 features: tuple[torch.Tensor, ...] | None = None) -> StudentOutputs:
        if features is None:
            if self.share_backbone:
                raise ValueError("a teacher sharing the student's backbone needs its features")
            features = self.model.backbone(img)
        preds, towers = self.model.head.forward_with_towers(self.model.fpn(features))
        return StudentOutputs(preds, towers, features)


def logit_distillation(student_preds: torch.Tensor, teacher_preds: torch.Tensor, class_ids: Sequence[int] | None = None,
                       num_classes: int | None = None) -> torch.Tensor:
    """MSE between raw head outputs: every channel, or only the class logits ``class_ids``."""
    if class_ids is None:
        return F.mse_loss(student_preds.float(), teacher_preds.float())
    if len(class_ids) == 0:
        return student_preds.new_zeros(())
    index = class_index(tuple(class_ids), student_preds.device)
    return F.mse_loss(student_preds[..., index].float(), teacher_preds[..., index].float())


@functools.lru_cache(maxsize=64)
def class_index(class_ids: tuple, device: torch.device) -> torch.Tensor:
    """The class ids as a device tensor, made once per set and device: a host-to-device copy per
    step would stall the step (and cannot be captured)."""
    return torch.as_tensor(class_ids, device=device)


@functools.lru_cache(maxsize=16)
def class_mask(classes: frozenset, num_classes: int, device: torch.device) -> torch.Tensor:
    """``[num_classes]`` bool, true at ``classes``: made once per set and device, as ``class_index``."""
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[sorted(classes)] = True
    return mask.to(device)


def feature_distillation(student_towers: Sequence[torch.Tensor],
                         teacher_towers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the MSE between the head towers' outputs."""
    return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student_towers, teacher_towers))
