"""Elastic Response Distillation: the elastic selection, the one-per-object peaks and the two terms
on hand-made outputs (the part inside a method, against a real teacher: tests/test_methods.py)."""

import pytest
import torch

from nanodet.continual.methods.erd import elastic_selection, erd_losses, local_peaks
from nanodet.model.loss.gfocal_loss import quality_focal_loss

NUM_CLASSES, REG_MAX = 6, 7
OLD = [0, 1, 2]
LEVELS = [(2, 5)]  # 10 locations on one 2x5 level


def test_the_selection_is_each_images_mean_plus_two_standard_deviations():
    scores = torch.full((2, 10), 0.1)
    scores[0, 9] = 0.9  # image 0: mean 0.18, sample std 0.253 -> threshold 0.686: only location 9
    scores[1] = torch.linspace(0.0, 0.9, 10)  # image 1: evenly spread, nothing 2 std above the mean
    selected = elastic_selection(scores)
    assert selected[0].tolist() == [False] * 9 + [True]
    assert not selected[1].any()
    assert float(scores[0].mean() + 2 * scores[0].std()) == pytest.approx(0.686, abs=1e-3)


def test_peaks_keep_one_location_per_neighbourhood_on_each_level():
    values = torch.zeros(1, 10 + 4)
    values[0, [1, 2, 8]] = torch.tensor([0.9, 0.5, 0.7])  # level 0 (2x5): 1 and 2 touch, 8 stands alone
    values[0, 10 + 3] = 0.2  # level 1 (2x2): the corner
    peaks = local_peaks(values, [(2, 5), (2, 2)])
    assert [i for i in range(14) if peaks[0, i] and values[0, i] > 0] == [1, 8, 13]
    with pytest.raises(ValueError, match="hold 10 locations"):
        local_peaks(values, [(2, 5)])


def outputs():
    """Teacher outputs for 1 image, 10 locations: location 3 holds a confident old-class object
    with a peaked box distribution; elsewhere nothing."""
    teacher = torch.zeros(1, 10, NUM_CLASSES + 4 * (REG_MAX + 1))
    teacher[..., :NUM_CLASSES] = -6.0
    teacher[0, 3, 1] = 4.0
    dist = teacher[..., NUM_CLASSES:].view(1, 10, 4, REG_MAX + 1)
    dist[0, 3, :, 2] = 6.0
    return teacher


def test_the_terms_are_zero_for_equal_outputs_and_count_only_selected_old_class_responses():
    teacher = outputs()
    assert [float(t) for t in erd_losses(teacher.clone(), teacher, OLD, NUM_CLASSES, REG_MAX, LEVELS)] == [0.0, 0.0]
    for where, channel, expect_cls, expect_reg in [
        (3, 1, True, False),             # an old class at the selected location
        (3, 4, False, False),            # a new class there: the new labels teach it
        (5, 1, False, False),            # an old class at an unselected location
        (3, NUM_CLASSES + 2, False, True),   # a distribution bin at the selected location
        (5, NUM_CLASSES + 2, False, False),  # one elsewhere
    ]:
        student = teacher.clone()
        student[0, where, channel] += 3.0
        cls_term, reg_term = erd_losses(student, teacher, OLD, NUM_CLASSES, REG_MAX, LEVELS)
        assert (float(cls_term) > 0) == expect_cls and (float(reg_term) > 0) == expect_reg, (where, channel)


def test_the_classification_term_is_the_mean_squared_logit_difference():
    teacher = outputs()
    student = teacher.clone()
    student[0, 3, 1] = 0.0  # logit 0 against 4, the other old classes equal: (0 - 4)^2 / 3 classes
    cls_term, _ = erd_losses(student, teacher, OLD, NUM_CLASSES, REG_MAX, LEVELS)
    assert float(cls_term) == pytest.approx(16.0 / 3, rel=1e-6)


def test_the_regression_term_is_the_score_weighted_kl_at_temperature_t():
    teacher = outputs()
    student = teacher.clone()
    student[0, 3, NUM_CLASSES:].view(4, REG_MAX + 1)[0, 2] = 0.0  # one side's peak flattened
    _, reg_term = erd_losses(student, teacher, OLD, NUM_CLASSES, REG_MAX, LEVELS, temperature=10.0)
    t = 10.0
    p = torch.log_softmax(teacher[0, 3, NUM_CLASSES:NUM_CLASSES + REG_MAX + 1] / t, dim=0)
    q = torch.log_softmax(student[0, 3, NUM_CLASSES:NUM_CLASSES + REG_MAX + 1] / t, dim=0)
    kl_one_side = float((p.exp() * (p - q)).mean()) * t * t  # averaged over bins, as mmdetection's KD loss
    weight = float(torch.sigmoid(torch.tensor(4.0)))  # the student's top old-class score there
    assert float(reg_term) == pytest.approx(weight * kl_one_side / 4, rel=1e-5)  # 1 of 4 sides differs


def test_a_class_outside_the_background_mask_is_trained_only_at_its_positives():
    pred = torch.tensor([[2.0, 2.0, 2.0], [2.0, -1.0, 0.5]])
    target = (torch.tensor([3, 0]), torch.tensor([0.0, 0.8]))  # row 0: background; row 1: class 0 at IoU 0.8
    full = quality_focal_loss(pred, target, reduction="none")
    masked = quality_focal_loss(pred, target, reduction="none",
                                background_classes=torch.tensor([False, True, True]))  # class 0 is old
    negative = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(2.0), torch.tensor(0.0)) * torch.sigmoid(torch.tensor(2.0)) ** 2
    assert float(full[0] - masked[0]) == pytest.approx(float(negative), rel=1e-6)  # class 0's negative is gone
    assert float(full[1]) == pytest.approx(float(masked[1]), rel=1e-6)  # its positive stays
