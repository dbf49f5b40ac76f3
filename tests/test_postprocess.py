"""Decoding, score threshold, NMS, detection cap and the mapping back to the original image,
on hand-made head outputs for a 64x64 input (priors: 8x8 + 4x4 + 2x2 + 1x1)."""

import math

import numpy as np
import pytest
import torch

from nanodet.util import bbox2distance, distance2bbox, warp_boxes
from fixtures_model import make_head

NUM_CLASSES = 3
SIZE = 64


def logit(p):
    return math.log(p / (1 - p))


def distribution_logits(bins):
    """32 logits whose four distributions have expectations ``bins`` (integers, or halves
    split evenly between two neighbouring bins)."""
    logits = torch.full((32,), -1e4)
    for edge, value in enumerate(bins):
        low = int(math.floor(value))
        logits[edge * 8 + low] = 0.0
        if value != low:
            logits[edge * 8 + low + 1] = 0.0  # two equal bins: the expectation is low + 0.5
    return logits


def make_preds(detections, batch=1):
    """Head output with background everywhere except ``{(image, prior): (class, score, bins)}``."""
    preds = torch.full((batch, 85, NUM_CLASSES + 32), -30.0)
    preds[..., NUM_CLASSES:] = distribution_logits([0, 0, 0, 0])
    for (image, prior), (cls, score, bins) in detections.items():
        preds[image, prior, cls] = logit(score)
        preds[image, prior, NUM_CLASSES:] = distribution_logits(bins)
    return preds


@pytest.fixture(scope="module")
def head():
    return make_head(num_classes=NUM_CLASSES).eval()


def meta(batch=1):
    return {"img": torch.zeros(batch, 3, SIZE, SIZE)}


def detect(head, preds):
    cls_preds, reg_preds = preds.split([NUM_CLASSES, 32], dim=-1)
    return head.get_bboxes(cls_preds, reg_preds, meta(preds.shape[0]))


def test_decoding_distributions_to_clipped_boxes(head):
    # Prior 10 is (x=16, y=8) at stride 8. Distances 1, 2, 3, 4 strides give
    # [16-8, 8-16, 16+24, 8+32] = [8, -8, 40, 40]; the input clips y1 to 0.
    # Prior 64 (first of the 16-stride level, at (0,0)) with left/top 1.5 strides and
    # right/bottom 2: [-24, -24, 32, 32] -> clipped [0, 0, 32, 32].
    dets, labels = detect(head, make_preds({(0, 10): (1, 0.9, [1, 2, 3, 4]),
                                            (0, 64): (2, 0.8, [1.5, 1.5, 2, 2])}))[0]
    assert labels.tolist() == [1, 2]
    assert torch.allclose(dets, torch.tensor([[8.0, 0, 40, 40, 0.9], [0, 0, 32, 32, 0.8]]), atol=1e-4)


def test_score_threshold_is_strictly_above_0_05(head):
    preds = make_preds({(0, 0): (0, 0.06, [1, 1, 1, 1]), (0, 30): (0, 0.04, [1, 1, 1, 1])})
    dets, labels = detect(head, preds)[0]
    assert dets.shape == (1, 5) and dets[0, 4].item() == pytest.approx(0.06)


def test_nms_is_per_class_at_iou_0_6(head):
    # Priors 9 (8,8) and 10 (16,8) with distances (2,2,2,2): boxes [-8,-8,24,24] and
    # [0,-8,32,24], clipped to [0,0,24,24] and [0,0,32,24]: IoU 24*24 / (32*24) = 0.75.
    # Same class: the lower score is suppressed.
    same = detect(head, make_preds({(0, 9): (0, 0.9, [2] * 4), (0, 10): (0, 0.7, [2] * 4)}))[0]
    assert same[1].tolist() == [0] and same[0][0, 4].item() == pytest.approx(0.9)
    # Different classes never suppress each other.
    other = detect(head, make_preds({(0, 9): (0, 0.9, [2] * 4), (0, 10): (1, 0.7, [2] * 4)}))[0]
    assert other[1].tolist() == [0, 1]
    # Priors 9 and 11 (24,8): [0,0,24,24] and [8,0,40,24]: IoU 16*24 / (24*24 + 32*24 - 16*24)
    # = 0.4 < 0.6.
    apart = detect(head, make_preds({(0, 9): (0, 0.9, [2] * 4), (0, 11): (0, 0.7, [2] * 4)}))[0]
    assert apart[1].tolist() == [0, 0]


def test_at_most_100_detections_keeping_the_best(head):
    # 64 non-overlapping 8x8 boxes (one per stride-8 cell, half a stride to each edge) in
    # each of 3 classes: 192 detections survive NMS; only the 100 best are kept.
    scores = torch.linspace(0.1, 0.99, 192)
    preds = make_preds({})
    for prior in range(64):
        preds[0, prior, NUM_CLASSES:] = distribution_logits([0.5] * 4)
        for cls in range(3):
            preds[0, prior, cls] = logit(scores[cls * 64 + prior].item())
    dets, labels = detect(head, preds)[0]
    assert dets.shape == (100, 5)
    assert torch.allclose(dets[:, 4], scores.flip(0)[:100], atol=1e-5)
    assert torch.all(dets[:, 4][:-1] >= dets[:, 4][1:])


def test_post_process_maps_back_through_the_inverse_warp(head):
    # Original images 128 x 96 were scaled by 0.5 and shifted down by 8 px into the input:
    # input (x, y) = (0.5 * x, 0.5 * y + 8).
    warp = np.array([[0.5, 0, 0], [0, 0.5, 8], [0, 0, 1]])
    # Image 7: prior 18 = (16, 16), distances (1, 0, 3, 3) strides -> input [8, 16, 40, 40]
    #          -> original [16, 16, 80, 64].
    # Image 9: prior 84 (stride 64, at (0,0)) with 1 stride right and bottom -> input
    #          [0, 0, 64, 64] -> original [0, -16, 128, 112], clipped to [0, 0, 128, 96].
    preds = make_preds({(0, 18): (2, 0.9, [1, 0, 3, 3]), (1, 84): (0, 0.5, [0, 0, 1, 1])}, batch=2)
    batch_meta = dict(meta(2), warp_matrix=[warp, warp], img_info={
        "height": torch.tensor([96, 96]), "width": torch.tensor([128, 128]),
        "id": torch.tensor([7, 9]), "file_name": ["a.jpg", "b.jpg"]})
    results = head.post_process(preds, batch_meta)
    assert set(results) == {7, 9}
    assert set(results[7]) == {0, 1, 2}  # every class has an entry, maybe empty
    assert results[7][0] == [] and results[7][1] == []
    assert np.allclose(results[7][2], [[16, 16, 80, 64, 0.9]], atol=1e-3)
    assert np.allclose(results[9][0], [[0, 0, 128, 96, 0.5]], atol=1e-3)


def test_post_process_with_no_detection_and_list_metadata(head):
    results = head.post_process(make_preds({}), dict(meta(1), warp_matrix=[np.eye(3)],
                                                     img_info={"height": [64], "width": [64], "id": [3]}))
    assert results == {3: {0: [], 1: [], 2: []}}


def test_warp_boxes_by_hand():
    # x' = 2x + 10, y' = 3y - 5: [1, 2, 3, 4] -> [12, 1, 16, 7].
    affine = np.array([[2.0, 0, 10], [0, 3, -5], [0, 0, 1]])
    assert np.allclose(warp_boxes(np.array([[1.0, 2, 3, 4]]), affine, 100, 100), [[12, 1, 16, 7]])
    # A homogeneous scale of 2 divides coordinates by 2; out-of-image parts are clipped.
    halve = np.diag([1.0, 1.0, 2.0])
    assert np.allclose(warp_boxes(np.array([[-4.0, 2, 40, 60]]), halve, 15, 25), [[0, 1, 15, 25]])
    # A 90-degree rotation keeps the axis-aligned box around the rotated corners:
    # (x, y) -> (-y + 10, x): [1, 2, 3, 6] -> x in [4, 8], y in [1, 3].
    rotate = np.array([[0.0, -1, 10], [1, 0, 0], [0, 0, 1]])
    out = warp_boxes(np.array([[1.0, 2, 3, 6]], np.float32), rotate, 50, 50)
    assert out.dtype == np.float32 and np.allclose(out, [[4, 1, 8, 3]])
    empty = np.zeros((0, 4), np.float32)
    assert warp_boxes(empty, affine, 10, 10) is empty


def test_distance_box_round_trip_and_clamps():
    points = torch.tensor([[10.0, 10.0], [50.0, 20.0]])
    boxes = torch.tensor([[4.0, 2.0, 30.0, 12.0], [45.0, 0.0, 60.0, 21.0]])
    distances = bbox2distance(points, boxes)
    assert distances.tolist() == [[6, 8, 20, 2], [5, 20, 10, 1]]
    assert torch.equal(distance2bbox(points, distances), boxes)
    # max_dis keeps targets strictly below it; max_shape (h, w) clips decoded boxes.
    assert bbox2distance(points, boxes, max_dis=7).max().item() == pytest.approx(6.9)
    assert distance2bbox(points, distances, max_shape=(15, 40)).tolist() == [
        [4, 2, 30, 12], [40, 0, 40, 15]]
    # Leading batch dimensions broadcast.
    assert distance2bbox(points, distances.expand(3, 2, 4)).shape == (3, 2, 4)
