"""SimpleConvHead: the auxiliary head of NanoDet-Plus (AGM).

Used only during training, to produce the predictions that drive label assignment for the
main head. Shared (not per-level) GN towers for classes and for boxes, plus a learnable
scale per level on the box branch. Attribute names are upstream's state-dict keys.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..module.conv import ConvModule
from ..module.init_weights import normal_init
from ..module.scale import Scale
from .nanodet_plus_head import CLS_BIAS_INIT


class SimpleConvHead(nn.Module):
    def __init__(
        self,
        num_classes: int,
        input_channel: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32),
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = dict(type="GN", num_groups=32, requires_grad=True),
        activation: str | None = "LeakyReLU",
        reg_max: int = 16,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = input_channel
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.strides = list(strides)
        self.reg_max = reg_max
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.activation = activation
        self.cls_out_channels = num_classes
        self._init_layers()
        self.init_weights()

    def _tower(self):
        return nn.ModuleList(
            ConvModule(
                self.in_channels if i == 0 else self.feat_channels,
                self.feat_channels,
                3,
                stride=1,
                padding=1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                activation=self.activation,
            )
            for i in range(self.stacked_convs)
        )

    def _init_layers(self):
        self.relu = nn.ReLU(inplace=True)  # unused; kept so the module tree matches upstream
        self.cls_convs = self._tower()
        self.reg_convs = self._tower()
        self.gfl_cls = nn.Conv2d(self.feat_channels, self.cls_out_channels, 3, padding=1)
        self.gfl_reg = nn.Conv2d(self.feat_channels, 4 * (self.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)

    def init_weights(self) -> None:
        for m in list(self.cls_convs) + list(self.reg_convs):
            normal_init(m.conv, std=0.01)
        normal_init(self.gfl_cls, std=0.01, bias=CLS_BIAS_INIT)
        normal_init(self.gfl_reg, std=0.01)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, num_priors, num_classes + 4 * (reg_max + 1)]``, laid out as the main head's."""
        outputs = []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_score = self.gfl_cls(cls_feat)
            bbox_pred = scale(self.gfl_reg(reg_feat)).float()
            outputs.append(torch.cat([cls_score, bbox_pred], dim=1).flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)
