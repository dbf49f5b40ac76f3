"""NanoDetPlusHead: output layout, priors, initialisation, targets, losses and towers."""

import math

import numpy as np
import pytest
import torch

from nanodet.model.head import HEADS, NanoDetPlusHead, SimpleConvHead, build_head
from nanodet.model.head.nanodet_plus_head import Integral
from nanodet.model.loss import bbox_overlaps
from fixtures_continual import ROOT
from fixtures_model import LOSS_CFG, STRIDES, make_head
from nanodet.model.module.conv import ConvModule, DepthwiseConvModule
from nanodet.util import ConfigError, read_config

def level_feats(batch=2, size=320, channels=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, math.ceil(size / s), math.ceil(size / s), generator=g)
            for s in STRIDES]


def gt_meta(batch=2, size=320, boxes=None, labels=None):
    boxes = boxes if boxes is not None else [
        np.array([[10, 20, 110, 220], [150, 160, 300, 310]], np.float32),
        np.array([[40, 40, 90, 120]], np.float32),
    ][:batch]
    labels = labels if labels is not None else [np.array([3, 7]), np.array([0])][:batch]
    return {"img": torch.zeros(batch, 3, size, size), "gt_bboxes": boxes, "gt_labels": labels}


def test_output_is_one_row_per_prior_with_classes_then_distributions():
    head = make_head(num_classes=20)
    preds = head(level_feats(batch=2))
    # 40*40 + 20*20 + 10*10 + 5*5 priors; 20 class logits + 4 * 8 distribution logits.
    assert preds.shape == (2, 2125, 20 + 32)


def test_priors_are_cell_corners_level_by_level():
    priors = make_head().get_center_priors(320, 320, torch.device("cpu"))
    assert priors.shape == (2125, 4)
    assert priors[0].tolist() == [0, 0, 8, 8]
    assert priors[1].tolist() == [8, 0, 8, 8]  # row-major: x first
    assert priors[40].tolist() == [0, 8, 8, 8]
    assert priors[1600].tolist() == [0, 0, 16, 16]  # first prior of the second level
    assert priors[-1].tolist() == [256, 256, 64, 64]
    # Sizes that are not multiples of the stride round up, like the feature maps.
    assert make_head().get_center_priors(330, 300, torch.device("cpu")).shape[0] == (
        42 * 38 + 21 * 19 + 11 * 10 + 6 * 5
    )


def test_init_sets_class_prior_bias_and_small_tower_weights():
    head = make_head()
    for conv in head.gfl_cls:
        assert torch.allclose(conv.bias.detach(), torch.tensor(-4.595))
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.2)
    tower_weights = torch.cat([m.weight.flatten() for m in head.cls_convs.modules()
                               if isinstance(m, torch.nn.Conv2d)])
    assert tower_weights.std().item() == pytest.approx(0.01, rel=0.2)
    # The untrained head therefore scores every class about sigmoid(-4.595) = 0.01.
    head.eval()
    scores = head(level_feats(batch=1))[..., :20].sigmoid()
    assert scores.mean().item() == pytest.approx(0.01, rel=0.05)


def test_integral_buffer_and_expectation():
    head = make_head()
    assert torch.equal(head.state_dict()["distribution_project.project"], torch.arange(8.0))
    integral = Integral(7)
    one_hot = torch.full((1, 32), -1e4)
    for edge, bin_index in enumerate([0, 3, 7, 5]):
        one_hot[0, edge * 8 + bin_index] = 0.0
    assert integral(one_hot).tolist() == [[0.0, 3.0, 7.0, 5.0]]
    assert integral(torch.zeros(2, 3, 32)).shape == (2, 3, 4)
    assert torch.allclose(integral(torch.zeros(1, 32)), torch.full((1, 4), 3.5))


def test_towers_are_the_features_before_gfl_cls():
    head = make_head().eval()
    feats = level_feats(batch=2)
    preds, towers = head.forward_with_towers(feats)
    assert [t.shape for t in towers] == [(2, 96, f.shape[2], f.shape[3]) for f in feats]
    assert torch.equal(preds, head(feats))
    rebuilt = torch.cat([cls(t).flatten(2) for cls, t in zip(head.gfl_cls, towers)], 2).permute(0, 2, 1)
    assert torch.allclose(rebuilt, preds)


def test_loss_is_finite_positive_and_trains_every_layer():
    head = make_head()
    preds = head(level_feats(batch=2))
    loss, states = head.loss(preds, gt_meta(batch=2))
    assert set(states) == {"loss_qfl", "loss_bbox", "loss_dfl"}
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(v.item() > 0 for v in states.values())
    assert loss.item() == pytest.approx(sum(v.item() for v in states.values()), rel=1e-6)
    loss.backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_loss_without_gt_is_only_the_negative_classification_term():
    head = make_head()
    preds = head(level_feats(batch=2))
    empty = gt_meta(batch=2, boxes=[np.zeros((0, 4), np.float32)] * 2,
                    labels=[np.zeros((0,), np.int64)] * 2)
    loss, states = head.loss(preds, empty)
    assert states["loss_bbox"].item() == 0.0 and states["loss_dfl"].item() == 0.0
    assert states["loss_qfl"].item() > 0 and torch.isfinite(loss)
    loss.backward()  # still connected to the graph


def test_loss_is_computed_in_fp32_under_autocast():
    head = make_head()
    preds = head(level_feats(batch=2)).detach()
    meta = gt_meta(batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, states = head.loss(preds, meta)
    assert mixed.dtype == torch.float32
    assert mixed.item() == head.loss(preds, meta)[0].item()


def test_gt_given_as_tensors_gives_the_same_loss():
    head = make_head()
    preds = head(level_feats(batch=2))
    meta = gt_meta(batch=2)
    as_tensors = dict(meta, gt_bboxes=[torch.from_numpy(b) for b in meta["gt_bboxes"]],
                      gt_labels=[torch.from_numpy(labels) for labels in meta["gt_labels"]])
    assert head.loss(preds, meta)[0].item() == head.loss(preds, as_tensors)[0].item()


def test_targets_of_one_image():
    head = make_head(num_classes=4)
    priors = head.get_center_priors(64, 64, torch.device("cpu"))  # 64 + 16 + 4 + 1 priors
    gt = torch.tensor([[4.0, 4.0, 36.0, 28.0]])
    # Predicted boxes equal to the GT make every candidate a strong positive.
    decoded = gt.expand(priors.shape[0], 4)
    labels, scores, weights, boxes, dists, num_pos = head.target_assign_single_img(
        torch.full((priors.shape[0], 4), -4.595), priors, decoded, gt, torch.tensor([2])
    )
    positive = labels == 2
    assert num_pos.item() == positive.sum().item() >= 1
    assert set(labels[~positive].tolist()) == {4}  # background = num_classes
    assert torch.all(weights == 1)
    assert torch.allclose(scores[positive], torch.ones(1)) and torch.all(scores[~positive] == 0)
    assert torch.all(boxes[positive] == gt) and torch.all(boxes[~positive] == 0)
    # Distance targets: prior-to-edge distances in strides, clamped to [0, reg_max - 0.1].
    p = priors[positive]
    expected = torch.stack([p[:, 0] - 4, p[:, 1] - 4, 36 - p[:, 0], 28 - p[:, 1]], 1) / p[:, 2:3]
    assert torch.allclose(dists[positive], expected.clamp(0, 6.9))


def reference_loss(head, preds, targets):
    """Upstream's form of the loss: box terms over the indexed positives only."""
    labels, label_scores, label_weights, bbox_targets, dist_targets, num_pos = targets
    cls_preds, reg_preds = preds.split([head.num_classes, 32], dim=-1)
    priors = head.get_center_priors(320, 320, preds.device)
    decoded = head.decode(priors, reg_preds).reshape(-1, 4)
    cls_preds, reg_preds = cls_preds.reshape(-1, head.num_classes), reg_preds.reshape(-1, 32)
    qfl = head.loss_qfl(cls_preds, (labels, label_scores), weight=label_weights,
                        avg_factor=max(num_pos.sum().item(), 1.0))
    pos = torch.nonzero(labels < head.num_classes).squeeze(1)
    weight = cls_preds[pos].detach().sigmoid().max(dim=1)[0]
    avg = max(weight.sum().item(), 1.0)
    giou = 1 - bbox_overlaps(decoded[pos], bbox_targets[pos], mode="giou", is_aligned=True)
    dfl = head.loss_dfl(reg_preds[pos].reshape(-1, 8), dist_targets[pos].reshape(-1),
                        weight=weight[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0 * avg)
    return qfl, 2.0 * (giou * weight).sum() / avg, dfl


def test_batched_loss_equals_the_loss_over_indexed_positives():
    head = make_head()
    preds = head(level_feats(batch=2))
    loss, states = head.loss(preds, gt_meta(batch=2))
    priors = head.get_center_priors(320, 320, preds.device)
    cls_preds, reg_preds = preds.detach().split([20, 32], dim=-1)
    targets = head.target_assign(cls_preds, priors, head.decode(priors, reg_preds), gt_meta(batch=2))
    qfl, giou, dfl = reference_loss(head, preds, targets)
    assert states["loss_qfl"].item() == pytest.approx(qfl.item(), rel=1e-5)
    assert states["loss_bbox"].item() == pytest.approx(giou.item(), rel=1e-5)
    assert states["loss_dfl"].item() == pytest.approx(dfl.item(), rel=1e-5)


def test_aux_predictions_drive_assignment_and_add_their_own_terms():
    head = make_head()
    preds = head(level_feats(batch=2))
    meta = gt_meta(batch=2)
    loss, states = head.loss(preds, meta)
    # Using the head's own output as the "aux" output assigns the same targets and adds an
    # identical copy of each term.
    aux_loss, aux_states = head.loss(preds, meta, aux_preds=preds)
    assert aux_loss.item() == pytest.approx(2 * loss.item(), rel=1e-6)
    assert set(aux_states) == set(states) | {"aux_" + k for k in states}


def test_simple_conv_head_layout_and_init():
    torch.manual_seed(0)
    aux = build_head(dict(name="SimpleConvHead", num_classes=20, input_channel=192,
                          feat_channels=192, stacked_convs=4, strides=STRIDES,
                          activation="LeakyReLU", reg_max=7))
    assert isinstance(aux, SimpleConvHead)
    out = aux(level_feats(batch=1, channels=192))
    assert out.shape == (1, 2125, 20 + 32)
    assert torch.allclose(aux.gfl_cls.bias.detach(), torch.tensor(-4.595))
    assert aux.cls_convs[0].gn.num_groups == 32


def test_build_head_rejects_unknown_names():
    assert set(HEADS) == {"NanoDetPlusHead", "SimpleConvHead"}
    with pytest.raises(ValueError, match="NanoDetPlusHead"):
        build_head({"name": "GFLHead", "num_classes": 3})
    with pytest.raises(ValueError):
        NanoDetPlusHead(3, LOSS_CFG, 96, conv_type="Deformable")


def test_upstreams_head_keys_conv_type_and_share_cls_reg_keep_their_meaning():
    depthwise = NanoDetPlusHead(3, LOSS_CFG, 96, conv_type="DWConv", share_cls_reg=True)
    plain = NanoDetPlusHead(3, LOSS_CFG, 96, conv_type="Conv")
    assert isinstance(depthwise.cls_convs[0][0], DepthwiseConvModule)
    assert isinstance(plain.cls_convs[0][0], ConvModule)
    assert not any("reg" in key for key in depthwise.state_dict())  # one shared output conv per level
    with pytest.raises(ValueError, match="share_cls_reg must be true"):
        NanoDetPlusHead(3, LOSS_CFG, 96, share_cls_reg=False)
    # And from a config file, as upstream's configs write them.
    cfg = read_config(ROOT / "cfg/demo.yml", ["model.arch.head.share_cls_reg=true"])
    assert cfg.model.arch.head.share_cls_reg is True
    with pytest.raises(ConfigError, match="unknown key 'model.arch.head.share_cls_regs'"):
        read_config(ROOT / "cfg/demo.yml", ["model.arch.head.share_cls_regs=true"])
