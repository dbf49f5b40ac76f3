"""NanoDet-Plus: a one-stage detector trained with an Assign Guidance Module (AGM).

The AGM is an auxiliary neck (a copy of the main one) and head (``aux_head``) fed with the
main neck's features concatenated to its own. Its predictions drive the label assignment of
the main head during training, and it is dropped at inference. From ``detach_epoch`` on, the
AGM's input is detached so that its loss no longer trains the backbone and the main neck.
Without ``aux_head`` (the continual-learning configs) this is a plain OneStageDetector.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

from ..head import build_head
from .one_stage_detector import OneStageDetector


class NanoDetPlus(OneStageDetector):
    def __init__(self, backbone: Mapping[str, Any], fpn: Mapping[str, Any] | None,
                 aux_head: Mapping[str, Any] | None = None, head: Mapping[str, Any] | None = None,
                 detach_epoch: int = 0) -> None:
        super().__init__(backbone, fpn, head)
        if aux_head is not None:
            self.aux_fpn = copy.deepcopy(self.fpn)
            self.aux_head = build_head(aux_head)
        else:
            self.aux_fpn = None
            self.aux_head = None
        self.detach_epoch = detach_epoch

    def forward_train(self, gt_meta: Mapping[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if self.aux_head is None:
            return super().forward_train(gt_meta)
        feat = self.backbone(gt_meta["img"])
        fpn_feat = self.fpn(feat)
        if self.epoch >= self.detach_epoch:
            aux_fpn_feat = self.aux_fpn([f.detach() for f in feat])
            dual_fpn_feat = [
                torch.cat([f.detach(), aux_f], dim=1) for f, aux_f in zip(fpn_feat, aux_fpn_feat)
            ]
        else:
            aux_fpn_feat = self.aux_fpn(feat)
            dual_fpn_feat = [torch.cat([f, aux_f], dim=1) for f, aux_f in zip(fpn_feat, aux_fpn_feat)]
        head_out = self.head(fpn_feat)
        aux_head_out = self.aux_head(dual_fpn_feat)
        loss, loss_states = self.head.loss(head_out, gt_meta, aux_preds=aux_head_out)
        return head_out, loss, loss_states
