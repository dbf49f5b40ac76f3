"""Backbone -> neck -> head detector."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..backbone import build_backbone
from ..fpn import build_fpn
from ..head import build_head


class OneStageDetector(nn.Module):
    """Args are the config nodes of the parts (``fpn`` and ``head`` may be omitted)."""

    def __init__(self, backbone: Mapping[str, Any], fpn: Mapping[str, Any] | None = None,
                 head: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone)
        self.fpn = build_fpn(fpn) if fpn is not None else None
        self.head = build_head(head) if head is not None else None
        self.epoch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor | Sequence[torch.Tensor]:
        x = self.backbone(x)
        if self.fpn is not None:
            x = self.fpn(x)
        if self.head is not None:
            x = self.head(x)
        return x

    @torch.no_grad()
    def inference(self, meta: Mapping[str, Any]) -> dict[int, dict[int, list[list[float]]]]:
        """Post-processed detections of ``meta["img"]``, in original-image coordinates
        (see ``NanoDetPlusHead.post_process``)."""
        preds = self(meta["img"])
        return self.head.post_process(preds, meta)

    def forward_train(self, gt_meta: Mapping[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(preds, loss, loss_states)`` of a training batch."""
        preds = self(gt_meta["img"])
        loss, loss_states = self.head.loss(preds, gt_meta)
        return preds, loss, loss_states

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
