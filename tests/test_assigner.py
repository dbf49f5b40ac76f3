"""Dynamic Soft Label Assigner on hand-made priors and GT boxes, plus agreement with a direct
(loop over GTs, full [priors, GTs, classes] cost) implementation of the published algorithm."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanodet.model.head.assigner import DynamicSoftLabelAssigner
from nanodet.model.head.assigner.dsl_assigner import center_in_gt_mask, soft_label_cls_cost
from nanodet.model.loss import bbox_overlaps

LOW = -4.595  # sigmoid(LOW) = 0.01
HIGH = 4.595


def priors_at(*centers, stride=8.0):
    return torch.tensor([[x, y, stride, stride] for x, y in centers])


def softplus(x):
    return math.log1p(math.exp(x))


def bce(x, t):  # binary cross-entropy with logits, by hand
    return softplus(x) - t * x


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_candidates_are_priors_strictly_inside_a_gt():
    gt = torch.tensor([[0.0, 0, 20, 20]])
    # (0,0) is on the corner and (20,10) on the right edge: not strictly inside.
    priors = priors_at((0, 0), (8, 8), (16, 16), (24, 8), (20, 10))
    assert center_in_gt_mask(priors, gt)[:, 0].tolist() == [False, True, True, False, False]


def test_cls_cost_matches_the_formula_by_hand():
    # One prior, two classes, logits (HIGH, LOW); GT of class 1 with IoU 0.25.
    # class 1 (soft label 0.25): BCE(LOW, 0.25) * |0.25 - sigmoid(LOW)|^2
    # class 0 (soft label 0):    BCE(HIGH, 0)   * sigmoid(HIGH)^2
    cost = soft_label_cls_cost(torch.tensor([[HIGH, LOW]]), torch.tensor([1]), torch.tensor([[0.25]]))
    expected = bce(LOW, 0.25) * (0.25 - sigmoid(LOW)) ** 2 + bce(HIGH, 0) * sigmoid(HIGH) ** 2
    assert cost.item() == pytest.approx(expected, rel=1e-5)


def iou_cost(iou):
    return 3.0 * -math.log(iou + 1e-7)


def test_dynamic_k_takes_the_cheapest_candidates_not_the_best_ious():
    # GT [0,0,10,10] (class 0 of 2). Four candidate priors predict boxes [0,0,10,h] with
    # IoU h/10 = 0.9, 0.8, 0.7, 0.2; a fifth prior, centred outside the GT, predicts the GT
    # exactly (IoU 1) but is no candidate.
    # dynamic k = int(0.9 + 0.8 + 0.7 + 0.2) = int(2.6) = 2 (the outsider's IoU is not summed).
    # All logits are LOW (score 0.01), so a higher IoU also means a higher class cost
    # BCE(LOW, iou) * (iou - 0.01)^2 (the other class adds the same constant to every prior):
    #   IoU 0.9: 4.146 * 0.792 + 3 * 0.105 = 3.60
    #   IoU 0.8: 3.686 * 0.624 + 3 * 0.223 = 2.97
    #   IoU 0.7: 3.227 * 0.476 + 3 * 0.357 = 2.61
    #   IoU 0.2: 0.929 * 0.036 + 3 * 1.609 = 4.86
    # so the two cheapest are the IoU-0.7 and IoU-0.8 priors, not the IoU-0.9 one.
    ious = [0.9, 0.8, 0.7, 0.2]
    costs = [bce(LOW, u) * (u - sigmoid(LOW)) ** 2 + iou_cost(u) for u in ious]
    assert sorted(range(4), key=costs.__getitem__)[:2] == [2, 1]

    priors = priors_at((2, 2), (4, 4), (6, 6), (8, 8), (15, 15))
    decoded = torch.tensor([[0.0, 0, 10, 10 * u] for u in ious] + [[0.0, 0, 10, 10]])
    scores = torch.full((5, 2), LOW)
    result = DynamicSoftLabelAssigner(topk=13, iou_factor=3.0).assign(
        scores, priors, decoded, torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0])
    )
    assert result.gt_inds.tolist() == [0, 1, 1, 0, 0]
    assert result.labels.tolist() == [-1, 0, 0, -1, -1]
    # Soft labels: a positive's overlap is its own IoU with its GT.
    assert result.max_overlaps[1].item() == pytest.approx(0.8, abs=1e-6)
    assert result.max_overlaps[2].item() == pytest.approx(0.7, abs=1e-6)


def test_dynamic_k_is_at_least_one():
    # A single poor candidate (IoU 0.2): k = max(1, int(0.2)) = 1, so it is still assigned.
    result = DynamicSoftLabelAssigner().assign(
        torch.full((1, 1), LOW), priors_at((5, 5)), torch.tensor([[0.0, 0, 10, 2]]),
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0]),
    )
    assert result.gt_inds.tolist() == [1]
    assert result.max_overlaps.item() == pytest.approx(0.2, abs=1e-6)


def test_prior_claimed_by_two_gts_goes_to_the_cheapest():
    # GT A [0,0,10,10] class 0; GT B [0,0,20,10] class 1.
    # Prior 0 (centre (5,5), inside both) predicts [0,0,10,10] and class 0 (logits HIGH, LOW):
    #   IoU(A) = 1, IoU(B) = 0.5.
    # Prior 1 (centre (15,5), inside B only) predicts [10,0,20,5] and class 0 too:
    #   IoU(A) = 0, IoU(B) = 0.25.
    # k(A) = int(1 + 0) = 1; k(B) = max(1, int(0.5 + 0.25)) = 1.
    # Costs for B:
    #   prior 0: BCE(LOW, .5)*(.5-.01)^2 + BCE(HIGH, 0)*.99^2 + 3*-ln .5  = 0.554 + 4.513 + 2.079 = 7.15
    #   prior 1: BCE(LOW, .25)*(.25-.01)^2 + 4.513 + 3*-ln .25           = 0.067 + 4.513 + 4.159 = 8.74
    # so both GTs pick prior 0. Its cost for A is ~0 (right class, IoU 1), so A keeps it and
    # B is left without a prior (as upstream: a GT can lose all its priors in a conflict).
    cost_b0 = bce(LOW, 0.5) * (0.5 - sigmoid(LOW)) ** 2 + bce(HIGH, 0) * sigmoid(HIGH) ** 2 + iou_cost(0.5)
    cost_b1 = bce(LOW, 0.25) * (0.25 - sigmoid(LOW)) ** 2 + bce(HIGH, 0) * sigmoid(HIGH) ** 2 + iou_cost(0.25)
    assert cost_b0 < cost_b1
    result = DynamicSoftLabelAssigner().assign(
        torch.tensor([[HIGH, LOW], [HIGH, LOW]]),
        priors_at((5, 5), (15, 5)),
        torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 5]]),
        torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 10]]),
        torch.tensor([0, 1]),
    )
    assert result.gt_inds.tolist() == [1, 0]
    assert result.labels.tolist() == [0, -1]
    assert result.max_overlaps[0].item() == pytest.approx(1.0, abs=1e-6)


def test_empty_gt_and_no_candidates_give_all_negatives():
    assigner = DynamicSoftLabelAssigner()
    priors = priors_at((5, 5), (50, 50))
    decoded = torch.tensor([[0.0, 0, 10, 10], [40, 40, 60, 60]])
    empty = assigner.assign(torch.zeros(2, 3), priors, decoded, torch.zeros(0, 4), torch.zeros(0))
    assert empty.num_gts == 0
    assert empty.gt_inds.tolist() == [0, 0] and empty.labels.tolist() == [-1, -1]
    # A GT that contains no prior centre: nothing is assigned.
    far = assigner.assign(torch.zeros(2, 3), priors, decoded, torch.tensor([[100.0, 100, 120, 120]]),
                          torch.tensor([2]))
    assert far.gt_inds.tolist() == [0, 0] and far.labels.tolist() == [-1, -1]


def test_ignore_regions_mark_priors_ignored_only_when_enabled():
    priors = priors_at((5, 5), (25, 5))
    decoded = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    gt, labels = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0])
    ignore = torch.tensor([[19.0, -1, 31, 11]])  # holds the second prediction entirely
    off = DynamicSoftLabelAssigner().assign(torch.zeros(2, 1), priors, decoded, gt, labels, ignore)
    on = DynamicSoftLabelAssigner(ignore_iof_thr=0.5).assign(
        torch.zeros(2, 1), priors, decoded, gt, labels, ignore
    )
    assert off.gt_inds.tolist() == [1, 0]
    assert on.gt_inds.tolist() == [1, -1]


# ------------------------------------------------------------------ agreement with a reference
def reference_assign(logits, priors, decoded, gt_bboxes, gt_labels, topk=13, iou_factor=3.0):
    """The published algorithm written directly: candidates by boolean indexing, the class
    cost as a [candidates, GTs, classes] tensor, and a loop over GTs for dynamic k."""
    num_priors = priors.shape[0]
    inside = center_in_gt_mask(priors, gt_bboxes).any(1)
    gt_inds = torch.zeros(num_priors, dtype=torch.long)
    overlaps = torch.zeros(num_priors)
    if not inside.any():
        return gt_inds, overlaps
    ious = bbox_overlaps(decoded[inside], gt_bboxes)
    num_valid, num_gt = ious.shape
    onehot = F.one_hot(gt_labels, logits.shape[1]).float()[None].repeat(num_valid, 1, 1)
    valid_logits = logits[inside][:, None].repeat(1, num_gt, 1)
    soft = onehot * ious[..., None]
    cls_cost = F.binary_cross_entropy_with_logits(valid_logits, soft, reduction="none")
    cls_cost = (cls_cost * (soft - valid_logits.sigmoid()).abs().pow(2)).sum(-1)
    cost = cls_cost + -torch.log(ious + 1e-7) * iou_factor
    matching = torch.zeros_like(cost)
    k_ious = torch.topk(ious, min(topk, num_valid), dim=0).values
    dynamic_ks = torch.clamp(k_ious.sum(0).int(), min=1)
    for g in range(num_gt):
        matching[torch.topk(cost[:, g], k=int(dynamic_ks[g]), largest=False).indices, g] = 1
    multi = matching.sum(1) > 1
    if multi.any():
        matching[multi] = 0
        matching[multi, cost[multi].argmin(1)] = 1
    fg = matching.sum(1) > 0
    valid_idx = inside.nonzero().squeeze(1)
    gt_inds[valid_idx[fg]] = matching[fg].argmax(1) + 1
    overlaps[valid_idx[fg]] = (matching * ious).sum(1)[fg]
    return gt_inds, overlaps


@pytest.mark.parametrize("seed", range(12))
def test_assignment_matches_the_direct_reference(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes, num_gts = 5, int(torch.randint(1, 9, (1,), generator=g))
    # Priors of a 16x16 grid with stride 8 (a 128x128 image).
    ys, xs = torch.meshgrid(torch.arange(16.0) * 8, torch.arange(16.0) * 8, indexing="ij")
    priors = torch.stack([xs.flatten(), ys.flatten(), torch.full((256,), 8.0), torch.full((256,), 8.0)], 1)
    centre = torch.rand(num_gts, 2, generator=g) * 128
    size = torch.rand(num_gts, 2, generator=g) * 60 + 6
    gt_bboxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    gt_labels = torch.randint(0, num_classes, (num_gts,), generator=g)
    dist = torch.rand(256, 4, generator=g) * 30 + 1
    decoded = torch.cat([priors[:, :2] - dist[:, :2], priors[:, :2] + dist[:, 2:]], 1)
    logits = torch.randn(256, num_classes, generator=g) * 2 - 3

    result = DynamicSoftLabelAssigner().assign(logits, priors, decoded, gt_bboxes, gt_labels)
    ref_inds, ref_overlaps = reference_assign(logits, priors, decoded, gt_bboxes, gt_labels)
    assert torch.equal(result.gt_inds, ref_inds)
    positive = ref_inds > 0
    assert torch.allclose(result.max_overlaps[positive], ref_overlaps[positive], atol=1e-6)
    assert torch.equal(result.labels[positive], gt_labels[ref_inds[positive] - 1])
