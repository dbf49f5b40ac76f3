"""The padded ground-truth block every batched consumer shares (nanodet/util/gt_batch.py)."""

import numpy as np
import pytest
import torch

from nanodet.util.gt_batch import (PADDED_GT_KEYS, PADDED_IGNORE_KEYS, PaddedGT, from_batch, pad_gt_batch,
                                   pad_on_device, with_extra_boxes)

BOXES = [np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32), np.zeros((0, 4), np.float32),
         np.array([[1, 2, 3, 4]], np.float32)]
LABELS = [np.array([2, 0]), np.zeros(0, np.int64), np.array([1])]
IGNORES = [None, np.array([[7, 7, 9, 9]], np.float32), np.zeros((0, 4), np.float32)]


def test_host_lists_are_padded_with_their_ignore_regions_after_them():
    gt = pad_gt_batch({"gt_bboxes": BOXES, "gt_labels": LABELS, "gt_bboxes_ignore": IGNORES}, "cpu", with_ignore=True)
    assert gt.bboxes.shape == (3, 2, 4) and gt.labels.dtype == torch.long and gt.valid.dtype == torch.bool
    assert gt.valid.tolist() == [[True, True], [False, False], [True, False]]
    assert gt.labels[0].tolist() == [2, 0] and gt.labels[2, 0] == 1
    assert torch.equal(gt.bboxes[0], torch.from_numpy(BOXES[0]))
    assert torch.equal(gt.bboxes[2, 0], torch.tensor([1.0, 2, 3, 4]))
    assert gt.ignore.shape == (3, 1, 4) and gt.ignore_valid.tolist() == [[False], [True], [False]]
    assert torch.equal(gt.ignore[1, 0], torch.tensor([7.0, 7, 9, 9]))
    # Per-image tensors (as a device would hold them) are padded the same way, where they are.
    on_device = pad_on_device([torch.from_numpy(b) for b in BOXES], [torch.from_numpy(x) for x in LABELS],
                              [torch.zeros(0, 4) if x is None else torch.from_numpy(x) for x in IGNORES], "cpu")
    for got, want in zip(on_device, gt):
        assert torch.equal(got, want)


def test_a_batch_without_boxes_still_has_one_padding_column():
    gt = pad_gt_batch({"gt_bboxes": [np.zeros((0, 4))] * 2, "gt_labels": [np.zeros(0)] * 2}, "cpu")
    assert gt.bboxes.shape == (2, 1, 4) and not gt.valid.any() and gt.ignore is None


def test_boxes_and_labels_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match=r"differ in length per image: \[2, 0, 1\] vs \[2, 0, 2\]"):
        pad_gt_batch({"gt_bboxes": BOXES, "gt_labels": LABELS[:2] + [np.array([1, 1])]}, "cpu")


def test_the_batch_entries_round_trip_and_a_carried_block_is_used_as_it_is():
    gt = pad_gt_batch({"gt_bboxes": BOXES, "gt_labels": LABELS, "gt_bboxes_ignore": IGNORES}, "cpu", with_ignore=True)
    entries = gt.batch_entries()
    assert set(entries) == set(PADDED_GT_KEYS) | set(PADDED_IGNORE_KEYS)
    carried = from_batch(entries, "cpu", with_ignore=True)
    assert all(torch.equal(a, b) for a, b in zip(carried, gt))
    # The per-image lists are not read when the block is there (they may be stale, or absent).
    assert all(torch.equal(a, b) for a, b in zip(pad_gt_batch(entries, "cpu", with_ignore=True), gt))
    assert from_batch({"gt_bboxes": BOXES}, "cpu") is None
    assert set(PaddedGT(gt.bboxes, gt.labels, gt.valid).batch_entries()) == set(PADDED_GT_KEYS)


def test_extra_boxes_follow_each_images_own_in_new_columns_and_in_the_host_lists():
    batch = {"gt_bboxes": BOXES, "gt_labels": LABELS}
    gt = pad_gt_batch(batch, "cpu")
    boxes = torch.tensor([[[1.0, 1, 2, 2], [0, 0, 0, 0]], [[3, 3, 4, 4], [5, 5, 6, 6]], [[0, 0, 0, 0]] * 2])
    labels, valid = torch.tensor([[7, 0], [8, 9], [0, 0]]), torch.tensor([[True, False], [True, True], [False, False]])
    out = with_extra_boxes(batch, gt, boxes, labels, valid)
    grown = from_batch(out, "cpu")
    assert grown.bboxes.shape == (3, 4, 4)  # two columns more, whatever is valid in them
    assert grown.valid.tolist() == [[True, True, True, False], [False, False, True, True], [True, False, False, False]]
    assert grown.labels[1, 2:].tolist() == [8, 9] and grown.labels[0, 2] == 7
    assert torch.equal(grown.bboxes[:, :2], gt.bboxes)  # the own boxes untouched
    assert [len(b) for b in out["gt_bboxes"]] == [3, 2, 1] and out["gt_labels"][1].tolist() == [8, 9]
    np.testing.assert_array_equal(out["gt_bboxes"][0][2], [1, 1, 2, 2])
    assert batch["gt_bboxes"] is BOXES and "gt_valid" not in batch  # the input batch is left as it was
    static = with_extra_boxes(gt.batch_entries(), gt, boxes, labels, valid)
    assert "gt_bboxes" not in static  # a captured step's batch: nothing copied to the host
