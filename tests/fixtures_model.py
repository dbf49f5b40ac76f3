"""Model parts for tests: upstream nanodet-plus-m_320's head node and a head built from it."""

import torch

from nanodet.model.head import build_head

STRIDES = [8, 16, 32, 64]
LOSS_CFG = {
    "loss_qfl": {"name": "QualityFocalLoss", "use_sigmoid": True, "beta": 2.0, "loss_weight": 1.0},
    "loss_dfl": {"name": "DistributionFocalLoss", "loss_weight": 0.25},
    "loss_bbox": {"name": "GIoULoss", "loss_weight": 2.0},
}


def head_cfg(num_classes=20, **overrides):
    """The head node of upstream's nanodet-plus-m_320 config."""
    cfg = dict(name="NanoDetPlusHead", num_classes=num_classes, input_channel=96, feat_channels=96,
               stacked_convs=2, kernel_size=5, strides=STRIDES, activation="LeakyReLU",
               reg_max=7, norm_cfg={"type": "BN"}, loss=LOSS_CFG)
    cfg.update(overrides)
    return cfg


def make_head(num_classes=20, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_head(head_cfg(num_classes, **overrides))
