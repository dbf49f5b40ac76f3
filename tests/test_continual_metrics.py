"""Continual metrics on hand-made numbers: the task matrix, forgetting, old and new mAP."""

import math

import pytest

from nanodet.continual.metrics import forgetting_after, mean_ap, task_matrix


def test_mean_ap_skips_undefined_classes():
    assert mean_ap({"a": 0.5, "b": 0.25, "c": math.nan}, ["a", "b", "c"]) == pytest.approx(0.375)
    assert mean_ap({"a": 0.5, "b": None}, ["b"]) != mean_ap({"a": 0.5}, ["a"])  # nan vs 0.5
    assert math.isnan(mean_ap({}, ["a"]))


def test_task_matrix_and_forgetting_by_hand():
    groups = [["a", "b"], ["c"], ["d"]]
    after = [
        {"a": 0.6, "b": 0.4},                       # T0: R00 = 0.5
        {"a": 0.3, "b": 0.1, "c": 0.8},             # T1: R10 = 0.2, R11 = 0.8
        {"a": 0.2, "b": 0.2, "c": 0.5, "d": 0.7},   # T2: R20 = 0.2, R21 = 0.5, R22 = 0.7
    ]
    matrix = task_matrix(after, groups)
    assert matrix[0] == [pytest.approx(0.5), None, None]
    assert matrix[1][:2] == [pytest.approx(0.2), pytest.approx(0.8)] and matrix[1][2] is None
    assert matrix[2] == [pytest.approx(0.2), pytest.approx(0.5), pytest.approx(0.7)]
    assert forgetting_after(matrix, 0) == {}
    assert forgetting_after(matrix, 1) == {0: pytest.approx(0.3)}
    # after T2: task 0 forgot max(0.5, 0.2) - 0.2 = 0.3; task 1 forgot 0.8 - 0.5 = 0.3
    assert forgetting_after(matrix, 2) == {0: pytest.approx(0.3), 1: pytest.approx(0.3)}


def test_forgetting_can_be_negative_when_a_task_improves():
    matrix = [[0.2, None], [0.3, 0.6]]
    assert forgetting_after(matrix, 1) == {0: pytest.approx(-0.1)}
