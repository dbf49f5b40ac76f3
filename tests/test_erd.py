"""Elastic Response Distillation: the elastic selection and the two terms on hand-made outputs
(the part inside a method, against a real teacher: tests/test_methods.py)."""

import pytest
import torch

from nanodet.continual.methods.erd import elastic_selection, erd_losses

NUM_CLASSES, REG_MAX = 6, 7
OLD = [0, 1, 2]


def test_the_selection_is_each_images_mean_plus_two_standard_deviations():
    scores = torch.full((2, 10), 0.1)
    scores[0, 9] = 0.9  # image 0: mean 0.18, std 0.24 -> threshold 0.66: only location 9
    scores[1] = torch.linspace(0.0, 0.9, 10)  # image 1: evenly spread, nothing 2 std above the mean
    selected = elastic_selection(scores)
    assert selected[0].tolist() == [False] * 9 + [True]
    assert not selected[1].any()
    mean, std = scores[0].mean(), scores[0].std(unbiased=False)
    assert float(mean + 2 * std) == pytest.approx(0.66, abs=1e-6)


def outputs():
    """Teacher outputs for 1 image, 10 locations: location 3 holds a confident old-class object."""
    teacher = torch.zeros(1, 10, NUM_CLASSES + 4 * (REG_MAX + 1))
    teacher[..., :NUM_CLASSES] = -6.0
    teacher[0, 3, 1] = 4.0
    teacher[..., NUM_CLASSES:] = torch.randn(1, 10, 4 * (REG_MAX + 1), generator=torch.Generator().manual_seed(0))
    return teacher


def test_the_terms_are_zero_for_equal_outputs_and_count_only_selected_old_class_responses():
    teacher = outputs()
    assert [float(t) for t in erd_losses(teacher.clone(), teacher, OLD, NUM_CLASSES, REG_MAX)] == [0.0, 0.0]
    for where, channel, expect_cls, expect_reg in [
        (3, 1, True, False),             # an old class at the selected location
        (3, 4, False, False),            # a new class there: the new labels teach it
        (5, 1, False, False),            # an old class at an unselected location
        (3, NUM_CLASSES + 2, False, True),   # a distribution bin at the selected location
        (5, NUM_CLASSES + 2, False, False),  # one elsewhere
    ]:
        student = teacher.clone()
        student[0, where, channel] += 3.0
        cls_term, reg_term = erd_losses(student, teacher, OLD, NUM_CLASSES, REG_MAX)
        assert (float(cls_term) > 0) == expect_cls and (float(reg_term) > 0) == expect_reg, (where, channel)
    student = teacher.clone()
    student[0, 3, 1] = 0.0  # sigmoid 0.5 against sigmoid(4)
    cls_term, _ = erd_losses(student, teacher, OLD, NUM_CLASSES, REG_MAX)
    assert float(cls_term) == pytest.approx((0.5 - torch.sigmoid(torch.tensor(4.0)).item()) ** 2, rel=1e-5)
