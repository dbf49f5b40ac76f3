"""QFL, DFL, GIoU and box overlaps against answers computed by hand (in the comments)."""

import math

import pytest
import torch

from nanodet.model.loss import (DistributionFocalLoss, GIoULoss, QualityFocalLoss,
                                bbox_overlaps, weight_reduce_loss)

LN2, LN3, LN6 = math.log(2), math.log(3), math.log(6)


# ---------------------------------------------------------------------------- QFL
def test_qfl_negative_and_positive_rows_by_hand():
    # Two classes. Row 0: positive of class 0 with IoU target 0.5, logits (0, 0), so both
    # sigmoids are 0.5:
    #   class 0: BCE(0, t=0.5) = ln2, scale |0.5 - 0.5|^2 = 0      -> 0
    #   class 1: BCE(0, t=0)   = ln2, scale 0.5^2 = 0.25           -> 0.25 ln2
    # Row 1: background (label 2 = num_classes), logits (0, ln3), sigmoids (0.5, 0.75):
    #   class 0: 0.25 ln2
    #   class 1: BCE(ln3, 0) = ln(1 + 3) = 2 ln2, scale 0.75^2     -> 1.125 ln2
    pred = torch.tensor([[0.0, 0.0], [0.0, LN3]])
    target = (torch.tensor([0, 2]), torch.tensor([0.5, 0.0]))
    qfl = QualityFocalLoss(beta=2.0, loss_weight=1.0)
    per_row = qfl(pred, target, reduction_override="none")
    assert torch.allclose(per_row, torch.tensor([0.25 * LN2, 1.375 * LN2]), atol=1e-6)
    # "mean" with avg_factor divides the sum: (0.25 + 1.375) ln2 / 2.
    assert qfl(pred, target, avg_factor=2.0).item() == pytest.approx(1.625 * LN2 / 2, abs=1e-6)
    # A zero weight removes a row; loss_weight scales the result.
    weighted = QualityFocalLoss(loss_weight=3.0)(pred, target, weight=torch.tensor([1.0, 0.0]),
                                                 avg_factor=1.0)
    assert weighted.item() == pytest.approx(3 * 0.25 * LN2, abs=1e-6)


def test_qfl_positive_is_pulled_towards_its_iou_not_towards_one():
    # Positive of class 1 with target 1.0 at logits (0, 0):
    #   class 1: BCE(0, 1) = ln2, scale |1 - 0.5|^2 = 0.25 -> 0.25 ln2; class 0 the same.
    pred = torch.zeros(1, 2)
    loss = QualityFocalLoss()(pred, (torch.tensor([1]), torch.tensor([1.0])), avg_factor=1.0)
    assert loss.item() == pytest.approx(0.5 * LN2, abs=1e-6)
    # With target 0.5 at sigmoid 0.5 the positive class has zero loss and zero gradient.
    pred = torch.zeros(1, 2, requires_grad=True)
    QualityFocalLoss()(pred, (torch.tensor([1]), torch.tensor([0.5])), avg_factor=1.0).backward()
    assert pred.grad[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert pred.grad[0, 0].item() > 0  # the negative class is pushed down


def test_qfl_rejects_sigmoid_free_mode():
    with pytest.raises(ValueError):
        QualityFocalLoss(use_sigmoid=False)


# ---------------------------------------------------------------------------- DFL
def test_dfl_splits_the_target_between_its_two_bins():
    # 4 bins (reg_max 3), logits (0, ln3, 0, 0): softmax (1/6, 1/2, 1/6, 1/6).
    # Target 1.25 -> bins 1 and 2 with weights 0.75 and 0.25:
    #   0.75 * -ln(1/2) + 0.25 * -ln(1/6) = 0.75 ln2 + 0.25 ln6 = 0.967800
    pred = torch.tensor([[0.0, LN3, 0.0, 0.0]])
    dfl = DistributionFocalLoss(loss_weight=1.0)
    assert dfl(pred, torch.tensor([1.25])).item() == pytest.approx(0.75 * LN2 + 0.25 * LN6, abs=1e-6)
    # An integer target uses one bin only: target 2 -> -ln(1/6).
    assert dfl(pred, torch.tensor([2.0])).item() == pytest.approx(LN6, abs=1e-6)
    # Uniform logits over 8 bins cost ln 8 whatever the target; loss_weight 0.25 scales it.
    uniform = DistributionFocalLoss(loss_weight=0.25)(torch.zeros(2, 8), torch.tensor([0.3, 6.9]))
    assert uniform.item() == pytest.approx(0.25 * math.log(8), abs=1e-6)


def test_dfl_weight_and_avg_factor():
    pred = torch.tensor([[0.0, LN3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([2.0, 1.5])
    # Row 0: ln6 (weight 2); row 1: ln4 (weight 0.5); divided by avg_factor 4.
    loss = DistributionFocalLoss()(pred, target, weight=torch.tensor([2.0, 0.5]), avg_factor=4.0)
    assert loss.item() == pytest.approx((2 * LN6 + 0.5 * math.log(4)) / 4, abs=1e-6)


# ---------------------------------------------------------------------------- GIoU
def test_giou_loss_by_hand():
    # A: [0,0,2,2] vs [1,1,3,3]: intersection 1, union 7, IoU 1/7; enclosing box area 9;
    #    GIoU = 1/7 - (9 - 7)/9 = -0.079365, loss 1.079365.
    # B: disjoint [0,0,1,1] vs [2,0,3,1]: IoU 0, union 2, enclosing area 3;
    #    GIoU = -(3 - 2)/3 = -1/3, loss 4/3.
    # C: identical boxes: loss 0.
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 9, 8]])
    target = torch.tensor([[1.0, 1, 3, 3], [2, 0, 3, 1], [5, 5, 9, 8]])
    per_pair = GIoULoss()(pred, target, reduction_override="none")
    expected = torch.tensor([1 + 2 / 9 - 1 / 7, 4 / 3, 0.0])
    assert torch.allclose(per_pair, expected, atol=1e-5)
    # loss_weight 2, weights (1, 0.5, 1), avg_factor 2: 2 * (1.079365 + 0.666667) / 2.
    loss = GIoULoss(loss_weight=2.0)(pred, target, weight=torch.tensor([1.0, 0.5, 1.0]), avg_factor=2.0)
    assert loss.item() == pytest.approx(1.079365 + 2 / 3, abs=1e-5)


def test_giou_loss_with_all_zero_weights_is_zero_and_differentiable():
    pred = torch.tensor([[0.0, 0, 2, 2]], requires_grad=True)
    loss = GIoULoss(loss_weight=2.0)(pred, torch.tensor([[1.0, 1, 3, 3]]), weight=torch.zeros(1),
                                     avg_factor=1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(pred.grad == 0)


# ---------------------------------------------------------------------------- overlaps
BOXES1 = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]])
BOXES2 = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]])


def test_bbox_overlaps_iou_iof_giou_by_hand():
    iou = bbox_overlaps(BOXES1, BOXES2)
    # [0,0,10,10] vs [0,0,10,20]: 100 / (100 + 200 - 100) = 0.5; box 1 equals box 2 of the
    # second set (1.0); touching or disjoint pairs are 0.
    expected = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(iou, expected)
    # IoF divides by the first box's area: 100 / 100.
    assert bbox_overlaps(BOXES1, BOXES2, mode="iof")[0, 0].item() == pytest.approx(1.0)
    # GIoU of [0,0,10,10] vs [10,10,20,20]: IoU 0, union 200, enclosing 400 -> -0.5.
    giou = bbox_overlaps(BOXES1, BOXES2, mode="giou")
    assert giou[0, 2].item() == pytest.approx(-0.5)
    assert giou[0, 0].item() == pytest.approx(0.5)  # nested boxes: enclosing = union


def test_bbox_overlaps_aligned_batched_and_empty():
    aligned = bbox_overlaps(BOXES1, BOXES2, is_aligned=True)
    assert torch.allclose(aligned, torch.tensor([0.5, 0.0, 0.0]))
    batched = bbox_overlaps(BOXES1.expand(2, 3, 4), BOXES2.expand(2, 3, 4))
    assert batched.shape == (2, 3, 3) and torch.allclose(batched[1], bbox_overlaps(BOXES1, BOXES2))
    assert bbox_overlaps(torch.zeros(0, 4), BOXES2).shape == (0, 3)
    assert bbox_overlaps(BOXES1, torch.zeros(0, 4)).shape == (3, 0)
    with pytest.raises(ValueError):
        bbox_overlaps(BOXES1, BOXES2, mode="dice")


def test_weight_reduce_loss_modes():
    loss = torch.tensor([1.0, 2.0, 3.0])
    assert weight_reduce_loss(loss, reduction="sum").item() == 6.0
    assert weight_reduce_loss(loss, torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(4 / 3)
    assert weight_reduce_loss(loss, avg_factor=torch.tensor(4.0)).item() == 1.5
    with pytest.raises(ValueError):
        weight_reduce_loss(loss, reduction="sum", avg_factor=2.0)
