"""The NanoDet-Plus detection head: per-level towers, GFL outputs, DSL assignment, losses and
post-processing.

Attribute names (``distribution_project``, ``cls_convs``, ``gfl_cls``) are upstream's state-dict
keys; keep them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ...util.box_transform import bbox2distance, distance2bbox, warp_boxes
from ...util.gt_batch import gt_lists_to_device, pad_gt_batch
from ..loss.gfocal_loss import DistributionFocalLoss, QualityFocalLoss
from ..loss.iou_loss import GIoULoss
from ..module.conv import ConvModule, DepthwiseConvModule
from ..module.init_weights import normal_init
from .assigner.batched_dsl_assigner import BatchedDynamicSoftLabelAssigner
from .assigner.dsl_assigner import DynamicSoftLabelAssigner

# Classification bias at init: sigmoid(-4.595) = 0.01, so the head starts by predicting
# "no object" everywhere (focal-loss prior) instead of flooding the loss with false positives.
CLS_BIAS_INIT = -4.595
CONV_TYPES = {"Conv": ConvModule, "DWConv": DepthwiseConvModule}
# Assignment targets: labels, label_scores, label_weights [B*P], bbox_targets, dist_targets [B*P, 4]
# and num_pos [B] (``target_assign``; one image's: [P], [P, 4] and [1]).
Targets = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Integral(nn.Module):
    """Expected value of each edge's discrete distance distribution over ``0..reg_max``.

    ``[..., 4 * (reg_max + 1)]`` logits -> ``[..., 4]`` distances (in stride units). The bin
    values are the persistent buffer ``project`` (a state-dict key upstream has too).
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x = F.softmax(x.reshape(*leading, 4, self.reg_max + 1), dim=-1)
        return F.linear(x, self.project.type_as(x)).reshape(*leading, 4)


def multiclass_nms(bboxes: torch.Tensor, scores: torch.Tensor, score_thr: float, iou_threshold: float,
                   max_num: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-wise NMS of one image, as upstream's ``multiclass_nms``.

    Args:
        bboxes (Tensor [N, 4]): one box per prior, shared by all classes.
        scores (Tensor [N, C]): per-class scores (no background column).

    Returns:
        (dets [K, 5] as x1, y1, x2, y2, score, labels [K]), sorted by decreasing score.
    """
    prior_idx, labels = (scores > score_thr).nonzero(as_tuple=True)
    if prior_idx.numel() == 0:
        return bboxes.new_zeros((0, 5)), labels.new_zeros((0,))
    boxes = bboxes[prior_idx]
    kept_scores = scores[prior_idx, labels]
    keep = batched_nms(boxes, kept_scores, labels, iou_threshold)
    if max_num > 0:
        keep = keep[:max_num]
    return torch.cat([boxes[keep], kept_scores[keep, None]], dim=1), labels[keep]


NMS_PREFIX = 1024  # candidates per image NMS-ed first; an image needing more is redone with all
NMS_BLOCK_ELEMENTS = 1 << 25  # images per pass are chosen so that [images, K, K] stays this small


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of boxes within each image, [B, K, 4] -> [B, K, K], in torchvision's
    nms arithmetic (no +1, intersection clamped at zero)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    width = (torch.minimum(x2[:, :, None], x2[:, None]) - torch.maximum(x1[:, :, None], x1[:, None])).clamp(min=0)
    height = (torch.minimum(y2[:, :, None], y2[:, None]) - torch.maximum(y1[:, :, None], y1[:, None])).clamp(min=0)
    inter = width * height
    return inter / (area[:, :, None] + area[:, None] - inter)


def greedy_nms_keep(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                    iou_threshold: float) -> torch.Tensor:
    """Greedy class-wise NMS of padded, score-sorted candidate lists, all images at once.

    Args:
        boxes (Tensor [B, K, 4]), labels (Tensor [B, K]), valid (Tensor [B, K] bool): each
            image's candidates by decreasing score, padding (``valid`` False) at the end.

    Returns:
        keep (Tensor [B, K] bool): what torchvision's ``batched_nms`` keeps within each image,
        classes apart.

    A candidate is kept when no kept candidate before it (same image and class) overlaps it by
    more than ``iou_threshold``. That rule has one solution, greedy NMS's; it is reached by
    applying the rule to the whole list at once until nothing changes (at least one more
    position is settled per round, and a few rounds settle real detections), so the work is a
    handful of batched tensor operations instead of a loop over boxes or classes.
    """
    suppresses = _suppression(boxes, labels, valid, iou_threshold)
    keep = valid
    while True:
        settled = valid & ~(keep[:, :, None] & suppresses).any(dim=1)
        if torch.equal(settled, keep):
            return keep
        keep = settled


def greedy_nms_keep_in_rounds(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                              iou_threshold: float, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``greedy_nms_keep`` in a fixed number of rounds, without asking the host whether the rule
    has stopped changing, so that a CUDA graph can hold it.

    Returns:
        (keep [B, K] bool, settled [B, K] bool): ``settled`` marks each image's candidates before
        the first one that another round would still change. There ``keep`` is exactly greedy
        NMS's (each decision depends only on better candidates, and the rule has one solution);
        beyond it the caller decides. An image settled to its end is exact throughout.
    """
    suppresses = _suppression(boxes, labels, valid, iou_threshold)
    keep = valid
    for _ in range(rounds):
        keep = valid & ~(keep[:, :, None] & suppresses).any(dim=1)
    again = valid & ~(keep[:, :, None] & suppresses).any(dim=1)
    return keep, (again != keep).cumsum(dim=1) == 0


def _suppression(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                 iou_threshold: float) -> torch.Tensor:
    """``[B, K, K]`` bool: candidate ``j`` would suppress a later candidate ``k`` of its class."""
    count = boxes.shape[1]
    earlier = torch.ones(count, count, dtype=torch.bool, device=boxes.device).triu(1)
    return ((_pairwise_iou(boxes.float()) > iou_threshold) & (labels[:, :, None] == labels[:, None])
            & earlier & valid[:, :, None])


def batched_multiclass_nms(bboxes: torch.Tensor, scores: torch.Tensor, score_thr: float, iou_threshold: float,
                           max_num: int = -1,
                           prefix: int = NMS_PREFIX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``multiclass_nms`` for a whole batch at once, on the device.

    Args:
        bboxes (Tensor [B, N, 4]): one box per prior, shared by all classes.
        scores (Tensor [B, N, C]): per-class scores.
        prefix: candidates per image taken first (by decreasing score). NMS keeps or drops a
            candidate by looking only at better ones, so the prefix's decisions are final; an
            image whose prefix keeps fewer than ``max_num`` while it has more candidates is
            redone with all of them. The result does not depend on ``prefix``.

    Returns:
        (image [K], dets [K, 5] as x1, y1, x2, y2, score, labels [K]): grouped by image in
        ascending order, each image's rows by decreasing score, as ``multiclass_nms`` orders them.
    """
    batch, priors, classes = scores.shape
    flat = scores.reshape(batch, priors * classes)
    candidates = (flat > score_thr).sum(dim=1)
    most = int(candidates.max()) if batch else 0
    width = most if max_num <= 0 else min(most, max(prefix, max_num))
    pending = torch.arange(batch, device=scores.device)
    image, kept_scores, index = [pending[:0]], [flat[:0, 0]], [pending[:0]]  # each image's kept candidates
    while len(pending):
        values, order = flat[pending].topk(width, dim=1)
        valid = values > score_thr
        boxes = bboxes[pending[:, None], order // classes]
        keep = torch.zeros_like(valid)
        step = max(1, NMS_BLOCK_ELEMENTS // max(1, width * width))
        for block in range(0, len(pending), step):
            part = slice(block, block + step)
            keep[part] = greedy_nms_keep(boxes[part], order[part] % classes, valid[part], iou_threshold)
        settled = candidates[pending] <= width
        if max_num > 0:
            keep &= keep.cumsum(dim=1) <= max_num
            settled |= keep.sum(dim=1) >= max_num
        row, position = (keep & settled[:, None]).nonzero(as_tuple=True)
        image.append(pending[row])
        kept_scores.append(values[row, position])
        index.append(order[row, position])
        pending, width = pending[~settled], most  # the few unsettled images: all their candidates
    image, kept_scores, index = torch.cat(image), torch.cat(kept_scores), torch.cat(index)
    by_image = torch.argsort(image, stable=True)  # each image's rows stay best first
    image, kept_scores, index = image[by_image], kept_scores[by_image], index[by_image]
    boxes = bboxes[image, index // classes]
    return image, torch.cat([boxes, kept_scores[:, None].to(boxes.dtype)], dim=1), index % classes


def _as_list(values):
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return values.tolist()
    return list(values)


class NanoDetPlusHead(nn.Module):
    """Detection head of NanoDet-Plus.

    Args:
        num_classes (int): number of classes (no background class).
        loss (Mapping): ``loss_qfl`` (beta, loss_weight), ``loss_dfl`` (loss_weight) and
            ``loss_bbox`` (loss_weight) settings.
        input_channel (int): channels of the input feature maps.
        feat_channels (int): channels inside the towers.
        stacked_convs (int): conv modules per tower.
        kernel_size (int): kernel of the tower convs.
        strides (list[int]): stride of each input level.
        conv_type (str): "DWConv" (depthwise-separable) or "Conv".
        norm_cfg (Mapping or None): norm of the tower convs.
        reg_max (int): the distance distribution covers ``0..reg_max`` strides.
        activation (str): activation of the tower convs.
        assigner_cfg (Mapping): arguments of :class:`DynamicSoftLabelAssigner` (shared by
            the batched assigner).
        share_cls_reg (bool): upstream's key from NanoDet's (pre-Plus) heads: NanoDet-Plus predicts
            classes and boxes with one shared output conv per level, which is ``true``; ``false``
            (separate branches) is not this head and is refused.
        batched_assign (bool): assign the whole batch at once with
            :class:`BatchedDynamicSoftLabelAssigner` (fixed shapes, no host sync; the default).
            False runs upstream's per-image loop, kept as the reference; both give the same
            targets and losses.
    """

    # Post-processing settings, fixed in upstream's code.
    score_thr = 0.05
    nms_iou_threshold = 0.6
    max_per_img = 100

    def __init__(
        self,
        num_classes: int,
        loss: Mapping[str, Mapping[str, Any]],
        input_channel: int,
        feat_channels: int = 96,
        stacked_convs: int = 2,
        kernel_size: int = 5,
        strides: Sequence[int] = (8, 16, 32),
        conv_type: str = "DWConv",
        norm_cfg: Mapping[str, Any] | None = dict(type="BN"),
        reg_max: int = 7,
        activation: str | None = "LeakyReLU",
        assigner_cfg: Mapping[str, Any] = dict(topk=13),
        share_cls_reg: bool = True,
        batched_assign: bool = True,
    ) -> None:
        super().__init__()
        if conv_type not in CONV_TYPES:
            raise ValueError(f"head conv_type must be one of {sorted(CONV_TYPES)}, got {conv_type!r}")
        if share_cls_reg is not True:
            raise ValueError("head share_cls_reg must be true: NanoDet-Plus predicts classes and boxes with one "
                             "shared conv per level (separate branches are NanoDet's older head), "
                             f"got {share_cls_reg!r}")
        self.num_classes = num_classes
        self.in_channels = input_channel
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.kernel_size = kernel_size
        self.strides = list(strides)
        self.reg_max = reg_max
        self.activation = activation
        self.conv_module = CONV_TYPES[conv_type]
        self.loss_cfg = loss
        self.norm_cfg = norm_cfg

        self.assigner = DynamicSoftLabelAssigner(**dict(assigner_cfg))
        self.batched_assigner = BatchedDynamicSoftLabelAssigner(**dict(assigner_cfg))
        self.batched_assign = bool(batched_assign)
        self.distribution_project = Integral(self.reg_max)
        qfl, dfl, bbox = loss["loss_qfl"], loss["loss_dfl"], loss["loss_bbox"]
        self.loss_qfl = QualityFocalLoss(
            use_sigmoid=qfl.get("use_sigmoid", True),
            beta=qfl["beta"],
            loss_weight=qfl["loss_weight"],
        )
        self.loss_dfl = DistributionFocalLoss(loss_weight=dfl["loss_weight"])
        self.loss_bbox = GIoULoss(loss_weight=bbox["loss_weight"])
        self._init_layers()
        self.init_weights()

    @property
    def num_outputs(self) -> int:
        """Channels per prior: class logits then 4 distance distributions."""
        return self.num_classes + 4 * (self.reg_max + 1)

    def _init_layers(self):
        self.cls_convs = nn.ModuleList(self._build_tower() for _ in self.strides)
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(self.feat_channels, self.num_outputs, 1, padding=0) for _ in self.strides
        )

    def _build_tower(self):
        tower = nn.ModuleList()
        for i in range(self.stacked_convs):
            tower.append(
                self.conv_module(
                    self.in_channels if i == 0 else self.feat_channels,
                    self.feat_channels,
                    self.kernel_size,
                    stride=1,
                    padding=self.kernel_size // 2,
                    norm_cfg=self.norm_cfg,
                    bias=self.norm_cfg is None,
                    activation=self.activation,
                )
            )
        return tower

    def init_weights(self) -> None:
        for m in self.cls_convs.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
        for conv in self.gfl_cls:
            normal_init(conv, std=0.01, bias=CLS_BIAS_INIT)

    # ----------------------------------------------------------------------------- forward
    def forward(self, feats: Sequence[torch.Tensor],
                with_towers: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw predictions ``[B, num_priors, num_outputs]``; with ``with_towers``, also the tower
        output of every level (the features after the stacked convs, before ``gfl_cls``), which
        feature distillation compares between a student and its teacher. Both go through
        ``__call__``, so a compiled head (``device.compile``) compiles both."""
        outputs, towers = self.level_outputs(feats)
        preds = torch.cat([out.flatten(start_dim=2) for out in outputs], dim=2).permute(0, 2, 1)
        if with_towers:
            return preds, towers
        if torch.onnx.is_in_onnx_export():
            # Exported models output class probabilities, as upstream's ONNX graph.
            cls_preds, reg_preds = self.split_preds(preds)
            preds = torch.cat([cls_preds.sigmoid(), reg_preds], dim=-1)
        return preds

    def level_outputs(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level, the raw output ``[B, num_outputs, h, w]`` (class logits, then distribution
        logits) and the tower's output: what ``forward`` flattens and concatenates."""
        towers, outputs = [], []
        for feat, tower, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in tower:
                feat = conv(feat)
            towers.append(feat)
            outputs.append(gfl_cls(feat))
        return outputs, towers

    def forward_with_towers(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(preds, towers)``: see ``forward``."""
        return self(feats, with_towers=True)

    # ------------------------------------------------------------------------------ priors
    def get_single_level_center_priors(self, batch_size: int, featmap_size: tuple[int, int], stride: int,
                                       dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """``[batch_size, h * w, 4]`` priors (x, y, stride, stride) of one level, row-major;
        a prior's point is the top-left corner of its cell, as upstream."""
        h, w = featmap_size
        y_range = torch.arange(h, dtype=dtype, device=device) * stride
        x_range = torch.arange(w, dtype=dtype, device=device) * stride
        y, x = torch.meshgrid(y_range, x_range, indexing="ij")
        x, y = x.flatten(), y.flatten()
        strides = x.new_full((x.shape[0],), stride)
        priors = torch.stack([x, y, strides, strides], dim=-1)
        return priors.unsqueeze(0).repeat(batch_size, 1, 1)

    def get_center_priors(self, input_height: int, input_width: int, device: torch.device | str,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[num_priors, 4]`` priors of all levels of one image (the same for every image)."""
        levels = [
            self.get_single_level_center_priors(1, size, s, dtype, device)[0]
            for size, s in zip(self.featmap_sizes(input_height, input_width), self.strides)
        ]
        return torch.cat(levels, dim=0)

    def featmap_sizes(self, input_height: int, input_width: int) -> list[tuple[int, int]]:
        """Each level's (height, width) for an input of that size, in the order of the priors."""
        return [(math.ceil(input_height / s), math.ceil(input_width / s)) for s in self.strides]

    def decode(self, priors: torch.Tensor, reg_preds: torch.Tensor,
               max_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """xyxy boxes from distance-distribution logits; ``priors [P, 4]`` broadcast over any
        leading batch dimensions of ``reg_preds [..., P, 4 * (reg_max + 1)]``."""
        distances = self.distribution_project(reg_preds) * priors[..., 2, None]
        return distance2bbox(priors[..., :2], distances, max_shape=max_shape)

    def split_preds(self, preds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``preds [..., num_outputs]`` -> (class logits, box distribution logits)."""
        return preds.split([self.num_classes, 4 * (self.reg_max + 1)], dim=-1)

    # -------------------------------------------------------------------------------- loss
    def loss(self, preds: torch.Tensor, gt_meta: Mapping[str, Any], aux_preds: torch.Tensor | None = None,
             background: bool | torch.Tensor = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detection loss of a batch.

        Args:
            preds (Tensor [B, P, num_outputs]): head output.
            gt_meta (Mapping): ``img`` [B, 3, H, W] and per-image ``gt_bboxes`` [N_i, 4],
                ``gt_labels`` [N_i] (numpy or tensors), optional ``gt_bboxes_ignore``; or the
                GT already padded on the device under ``nanodet.util.gt_batch.PADDED_GT_KEYS`` (batched path).
            aux_preds (Tensor or None): output of the auxiliary head; when given, it (not
                ``preds``) drives the label assignment and gets its own losses (``aux_*``).
            background (bool or Tensor [num_classes] bool): False drops the quality focal loss
                of the priors assigned to background, so only positives are supervised (a
                continual-learning option: unlabeled old objects are then not pushed towards
                background); a per-class mask keeps the negatives of the classes it marks and
                supervises the others only at their own positives.

        Returns:
            (loss, loss_states): the total and its named terms.
        """
        # Always in fp32, also under autocast: decoded boxes and IoUs need the precision.
        with torch.autocast(preds.device.type, enabled=False):
            aux_preds = None if aux_preds is None else aux_preds.float()
            return self._loss(preds.float(), gt_meta, aux_preds, background)

    def _loss(self, preds, gt_meta, aux_preds, background=True):
        input_height, input_width = gt_meta["img"].shape[2:]
        priors = self.get_center_priors(input_height, input_width, preds.device)
        cls_preds, reg_preds = self.split_preds(preds)
        decoded_bboxes = self.decode(priors, reg_preds)

        if aux_preds is not None:
            aux_cls_preds, aux_reg_preds = self.split_preds(aux_preds)
            aux_decoded_bboxes = self.decode(priors, aux_reg_preds)
            targets = self._assign(aux_cls_preds.detach(), priors, aux_decoded_bboxes.detach(), gt_meta)
        else:
            targets = self._assign(cls_preds.detach(), priors, decoded_bboxes.detach(), gt_meta)

        loss, loss_states = self._get_loss_from_assign(cls_preds, reg_preds, decoded_bboxes, targets, background)
        if aux_preds is not None:
            aux_loss, aux_states = self._get_loss_from_assign(
                aux_cls_preds, aux_reg_preds, aux_decoded_bboxes, targets, background
            )
            loss = loss + aux_loss
            loss_states.update({"aux_" + k: v for k, v in aux_states.items()})
        return loss, loss_states

    def _get_loss_from_assign(self, cls_preds, reg_preds, decoded_bboxes, targets, background=True):
        """QFL, GIoU and DFL over the flattened batch, computed once.

        The box terms run over every prior with zero weight outside the positives rather
        than indexing the positives, which would need a host sync; the sums are the same.
        """
        labels, label_scores, label_weights, bbox_targets, dist_targets, num_pos = targets
        cls_preds = cls_preds.reshape(-1, self.num_classes)
        reg_preds = reg_preds.reshape(-1, 4 * (self.reg_max + 1))
        decoded_bboxes = decoded_bboxes.reshape(-1, 4)

        # Normalised by this process's positives, at least 1 (upstream's reduce_mean never
        # actually averaged across processes: it all-reduced a temporary).
        num_total_samples = num_pos.sum().clamp(min=1).float()
        positive = (labels >= 0) & (labels < self.num_classes)
        background_classes = background if isinstance(background, torch.Tensor) else None
        if background is False:
            label_weights = torch.where(positive, label_weights, 0.0)
        loss_qfl = self.loss_qfl(
            cls_preds, (labels, label_scores), weight=label_weights, avg_factor=num_total_samples,
            background_classes=background_classes,
        )

        # Box terms are weighted by the (detached) best class score of each positive.
        best_scores = cls_preds.detach().sigmoid().max(dim=1).values
        weight_targets = torch.where(positive, best_scores, 0.0)
        bbox_avg_factor = weight_targets.sum().clamp(min=1.0)
        loss_bbox = self.loss_bbox(
            decoded_bboxes, bbox_targets, weight=weight_targets, avg_factor=bbox_avg_factor
        )
        loss_dfl = self.loss_dfl(
            reg_preds.reshape(-1, self.reg_max + 1),
            dist_targets.reshape(-1),
            weight=weight_targets[:, None].expand(-1, 4).reshape(-1),
            avg_factor=4.0 * bbox_avg_factor,
        )
        loss = loss_qfl + loss_bbox + loss_dfl
        return loss, dict(loss_qfl=loss_qfl, loss_bbox=loss_bbox, loss_dfl=loss_dfl)

    def _assign(self, cls_preds, priors, decoded_bboxes, gt_meta):
        if self.batched_assign:
            return self.target_assign_batched(cls_preds, priors, decoded_bboxes, gt_meta)
        return self.target_assign(cls_preds, priors, decoded_bboxes, gt_meta)

    @torch.no_grad()
    def target_assign_batched(self, cls_preds: torch.Tensor, priors: torch.Tensor, decoded_bboxes: torch.Tensor,
                              gt_meta: Mapping[str, Any]) -> Targets:
        """:meth:`target_assign` for the whole batch at once: the GT padded to ``[B, G]`` with
        one host-to-device copy, one :class:`BatchedDynamicSoftLabelAssigner` call, and the
        targets built on ``[B, P]`` tensors. The same flat targets as the per-image loop, with
        fixed shapes and no host sync."""
        use_ignore = self.batched_assigner.ignore_iof_thr > 0
        gt = pad_gt_batch(gt_meta, cls_preds.device, with_ignore=use_ignore)
        result = self.batched_assigner.assign(
            cls_preds, priors, decoded_bboxes, gt.bboxes, gt.labels, gt.valid,
            gt.ignore, gt.ignore_valid,
        )
        positive = result.positive
        gt_index = (result.gt_inds - 1).clamp(min=0)
        assigned = gt.bboxes.gather(1, gt_index[..., None].expand(-1, -1, 4))  # [B, P, 4]
        labels = torch.where(positive, result.labels, self.num_classes)
        label_scores = torch.where(positive, result.max_overlaps, 0.0)
        label_weights = (result.gt_inds >= 0).to(priors.dtype)
        bbox_targets = torch.where(positive[..., None], assigned, 0.0)
        distances = bbox2distance(priors[:, :2], assigned) / priors[:, None, 2]
        dist_targets = torch.where(positive[..., None], distances, 0.0)
        dist_targets = dist_targets.clamp(min=0, max=self.reg_max - 0.1)
        num_pos = positive.sum(dim=1)
        return (
            labels.reshape(-1),
            label_scores.reshape(-1),
            label_weights.reshape(-1),
            bbox_targets.reshape(-1, 4),
            dist_targets.reshape(-1, 4),
            num_pos,
        )

    @torch.no_grad()
    def target_assign(self, cls_preds: torch.Tensor, priors: torch.Tensor, decoded_bboxes: torch.Tensor,
                      gt_meta: Mapping[str, Any]) -> Targets:
        """Assign every image of the batch, then concatenate the targets into flat tensors:
        labels, label_scores, label_weights [B*P], bbox_targets, dist_targets [B*P, 4], and
        num_pos [B] (positives per image)."""
        device = cls_preds.device
        gt_bboxes = gt_lists_to_device(gt_meta["gt_bboxes"], (4,), torch.float32, device)
        gt_labels = gt_lists_to_device(gt_meta["gt_labels"], (), torch.long, device)
        ignores = [None] * len(gt_bboxes)
        if self.assigner.ignore_iof_thr > 0 and gt_meta.get("gt_bboxes_ignore") is not None:
            ignore_items = [np.zeros((0, 4)) if x is None else x for x in gt_meta["gt_bboxes_ignore"]]
            ignores = gt_lists_to_device(ignore_items, (4,), torch.float32, device)
        per_image = [
            self.target_assign_single_img(cls_preds[i], priors, decoded_bboxes[i], *gts)
            for i, gts in enumerate(zip(gt_bboxes, gt_labels, ignores))
        ]
        return tuple(torch.cat(parts, dim=0) for parts in zip(*per_image))

    @torch.no_grad()
    def target_assign_single_img(
        self, cls_preds: torch.Tensor, center_priors: torch.Tensor, decoded_bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor, gt_labels: torch.Tensor, gt_bboxes_ignore: torch.Tensor | None = None,
    ) -> Targets:
        """Targets of one image's ``P`` priors: labels (``num_classes`` = background),
        label_scores (IoU soft labels), label_weights (0 = ignored), bbox_targets,
        dist_targets (in stride units, clamped below ``reg_max``) and num_pos ([1])."""
        num_priors = center_priors.size(0)
        labels = center_priors.new_full((num_priors,), self.num_classes, dtype=torch.long)
        if gt_bboxes.size(0) == 0:  # no GT: every prior is a weighted negative
            zeros4 = torch.zeros_like(center_priors)
            return (
                labels,
                center_priors.new_zeros((num_priors,)),
                center_priors.new_ones((num_priors,)),
                zeros4,
                zeros4,
                labels.new_zeros((1,)),
            )
        result = self.assigner.assign(
            cls_preds, center_priors, decoded_bboxes, gt_bboxes, gt_labels, gt_bboxes_ignore
        )
        positive = result.gt_inds > 0
        assigned = gt_bboxes[(result.gt_inds - 1).clamp(min=0)]
        labels = torch.where(positive, result.labels, labels)
        label_scores = torch.where(positive, result.max_overlaps, 0.0)
        label_weights = (result.gt_inds >= 0).to(center_priors.dtype)
        bbox_targets = torch.where(positive[:, None], assigned, 0.0)
        distances = bbox2distance(center_priors[:, :2], assigned) / center_priors[:, None, 2]
        dist_targets = torch.where(positive[:, None], distances, 0.0)
        dist_targets = dist_targets.clamp(min=0, max=self.reg_max - 0.1)
        num_pos = positive.sum().reshape(1)
        return labels, label_scores, label_weights, bbox_targets, dist_targets, num_pos

    # ------------------------------------------------------------------------ post-process
    def post_process(self, preds: torch.Tensor, meta: Mapping[str, Any]) -> dict[int, dict[int, list[list[float]]]]:
        """Detections per image in original-image pixels:
        ``{img_id: {class: [[x0, y0, x1, y1, score], ...] for every class}}``.

        Boxes are mapped back through the inverse of ``meta["warp_matrix"][i]`` and clipped
        to the original ``meta["img_info"]`` width and height.
        """
        cls_preds, reg_preds = self.split_preds(preds)
        results = self.get_bboxes(cls_preds, reg_preds, meta)
        img_info = meta["img_info"]
        det_results = {}
        for (det_bboxes, det_labels), width, height, img_id, warp_matrix in zip(
            results,
            _as_list(img_info["width"]),
            _as_list(img_info["height"]),
            _as_list(img_info["id"]),
            meta["warp_matrix"],
        ):
            det_bboxes = det_bboxes.detach().cpu().numpy()
            inverse = np.linalg.inv(np.asarray(warp_matrix))
            det_bboxes[:, :4] = warp_boxes(det_bboxes[:, :4], inverse, width, height)
            classes = det_labels.detach().cpu().numpy()
            det_results[img_id] = {
                c: det_bboxes[classes == c].astype(np.float32).tolist()
                for c in range(self.num_classes)
            }
        return det_results

    def detect(self, preds: torch.Tensor,
               input_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of a batch in input-image pixels, decoded and NMS-ed on the device for all
        images at once: ``batched_multiclass_nms``'s ``(image, dets, labels)``."""
        cls_preds, reg_preds = self.split_preds(preds)
        input_height, input_width = input_shape
        priors = self.get_center_priors(input_height, input_width, cls_preds.device)
        with torch.autocast(cls_preds.device.type, enabled=False):
            bboxes = self.decode(priors, reg_preds.float(), max_shape=(input_height, input_width))
            scores = cls_preds.float().sigmoid()
        return batched_multiclass_nms(bboxes, scores, self.score_thr, self.nms_iou_threshold, self.max_per_img)

    def get_bboxes(self, cls_preds: torch.Tensor, reg_preds: torch.Tensor,
                   img_metas: Mapping[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Decode and NMS every image: a list of ``(det_bboxes [K, 5], det_labels [K])`` in
        input-image pixels (boxes clipped to the input)."""
        input_height, input_width = img_metas["img"].shape[2:]
        priors = self.get_center_priors(input_height, input_width, cls_preds.device)
        with torch.autocast(cls_preds.device.type, enabled=False):
            bboxes = self.decode(priors, reg_preds.float(), max_shape=(input_height, input_width))
            scores = cls_preds.float().sigmoid()
        return [
            multiclass_nms(
                bboxes[i], scores[i], self.score_thr, self.nms_iou_threshold, self.max_per_img
            )
            for i in range(cls_preds.shape[0])
        ]
