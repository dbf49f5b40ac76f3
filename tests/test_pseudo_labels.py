"""Pseudo-labels for the whole batch at once give what decoding image by image gives."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from nanodet.continual.methods.pseudo_labels import add_pseudo_labels
from nanodet.model.head import build_head
from nanodet.model.head.nanodet_plus_head import greedy_nms_keep, greedy_nms_keep_in_rounds
from nanodet.util.gt_batch import PADDED_GT_KEYS, pad_gt_batch
from nanodet.util.config import read_config

SIZE = 96  # input pixels: 144 + 36 + 9 + 4 = 193 priors at strides 8..64
OLD = [0, 1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def head():
    return build_head(read_config("cfg/demo.yml").model.arch.head).eval()


def per_image_reference(head, batch, teacher_preds, old_classes, score_threshold, iou_threshold):
    """The straightforward way: decode and NMS each image, filter, drop boxes on ground truth."""
    cls_preds, reg_preds = head.split_preds(teacher_preds)
    boxes_out, labels_out = [], []
    old = torch.tensor(old_classes)
    for (dets, labels), gt_boxes, gt_labels in zip(head.get_bboxes(cls_preds, reg_preds, batch),
                                                   batch["gt_bboxes"], batch["gt_labels"]):
        keep = (dets[:, 4] >= score_threshold) & torch.isin(labels, old)
        boxes, labels = dets[keep, :4], labels[keep]
        gt = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
        if len(gt) and len(boxes):
            keep = box_iou(boxes, gt).max(dim=1).values < iou_threshold
            boxes, labels = boxes[keep], labels[keep]
        boxes_out.append(np.concatenate([np.asarray(gt_boxes, np.float32).reshape(-1, 4), boxes.numpy()]))
        labels_out.append(np.concatenate([np.asarray(gt_labels, np.int64).reshape(-1), labels.numpy()]))
    return boxes_out, labels_out


def random_case(head, seed, images=4):
    g = torch.Generator().manual_seed(seed)
    priors = head.get_center_priors(SIZE, SIZE, torch.device("cpu")).shape[0]
    preds = torch.randn(images, priors, head.num_classes + 4 * (head.reg_max + 1), generator=g)
    preds[..., :head.num_classes] -= 4.0  # mostly background, with a few confident priors
    hot = torch.rand(images, priors, head.num_classes, generator=g) < 0.01
    preds[..., :head.num_classes][hot] += 8.0 * torch.rand(int(hot.sum()), generator=g)
    gt_boxes, gt_labels = [], []
    cls_preds, reg_preds = head.split_preds(preds)
    detections = head.get_bboxes(cls_preds, reg_preds, {"img": torch.zeros(images, 3, SIZE, SIZE)})
    for i, (dets, _) in enumerate(detections):
        n = i % 3  # 0, 1 or 2 boxes; some of them exactly on a detection, so it must be dropped
        boxes = [dets[j, :4].tolist() for j in range(min(n, len(dets)))]
        boxes += [[5.0, 5.0, 30.0, 40.0]] * (n - len(boxes))
        gt_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        gt_labels.append(np.full(len(boxes), 7, np.int64))
    batch = {"img": torch.zeros(images, 3, SIZE, SIZE), "gt_bboxes": gt_boxes, "gt_labels": gt_labels}
    return batch, preds


@pytest.mark.parametrize("seed", range(6))
def test_batched_pseudo_labels_equal_the_per_image_reference(head, seed, monkeypatch):
    monkeypatch.setattr(head, "max_per_img", -1)  # the reference caps all classes, not old ones
    batch, preds = random_case(head, seed)
    out = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.5, iou_threshold=0.5)
    boxes, labels = per_image_reference(head, batch, preds, OLD, 0.5, 0.5)
    assert sum(len(b) - len(g) for b, g in zip(boxes, batch["gt_bboxes"])) > 0  # some pseudo-labels
    for got_boxes, got_labels, want_boxes, want_labels in zip(out["gt_bboxes"], out["gt_labels"], boxes, labels):
        np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4)
        np.testing.assert_array_equal(got_labels, want_labels)


def test_the_padded_ground_truth_holds_the_same_boxes_as_the_lists(head):
    batch, preds = random_case(head, seed=11)
    out = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.5, iou_threshold=0.5)
    bboxes, labels, valid = (out[k] for k in PADDED_GT_KEYS)
    for i in range(len(batch["img"])):
        np.testing.assert_allclose(bboxes[i][valid[i]].numpy(), out["gt_bboxes"][i], atol=1e-5)
        np.testing.assert_array_equal(labels[i][valid[i]].numpy(), out["gt_labels"][i])
    # the loss reads the padded tensors as they are
    again = pad_gt_batch(out, torch.device("cpu"))
    assert torch.equal(again.bboxes, bboxes) and torch.equal(again.valid, valid)


def test_a_detection_on_a_labelled_box_and_new_classes_are_never_pseudo_labels(head):
    batch, preds = random_case(head, seed=3)
    out = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.5, iou_threshold=0.5)
    for own, boxes, labels in zip(batch["gt_bboxes"], out["gt_bboxes"], out["gt_labels"]):
        extra_boxes, extra_labels = boxes[len(own):], labels[len(own):]
        assert set(extra_labels.tolist()) <= set(OLD)
        if len(own) and len(extra_boxes):
            assert box_iou(torch.as_tensor(extra_boxes), torch.as_tensor(own)).max() < 0.5
    assert [len(b) for b in batch["gt_bboxes"]] == [0, 1, 2, 0]  # the input batch is untouched


def test_each_image_gets_at_most_max_per_img_pseudo_labels(head, monkeypatch):
    batch, preds = random_case(head, seed=5)
    uncapped = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.3, iou_threshold=0.5)
    most = max(len(b) - len(g) for b, g in zip(uncapped["gt_bboxes"], batch["gt_bboxes"]))
    assert most >= 2
    monkeypatch.setattr(head, "max_per_img", 1)
    capped = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.3, iou_threshold=0.5)
    for own, full, one in zip(batch["gt_bboxes"], uncapped["gt_bboxes"], capped["gt_bboxes"]):
        assert len(one) - len(own) <= 1
        if len(one) > len(own):  # the best one (batched NMS keeps scores in decreasing order)
            np.testing.assert_allclose(one[len(own)], full[len(own)], atol=1e-5)


def test_no_confident_detection_leaves_the_ground_truth_as_it_is(head):
    batch, preds = random_case(head, seed=2)
    preds[..., :head.num_classes] = -10.0
    out = add_pseudo_labels(head, batch, preds, OLD, score_threshold=0.5, iou_threshold=0.5)
    for own, boxes in zip(batch["gt_bboxes"], out["gt_bboxes"]):
        np.testing.assert_array_equal(boxes, own.reshape(-1, 4))


def chain_of_boxes(length, step=4.0, side=20.0):
    """One image: boxes shifted by ``step`` one after the other, scores decreasing, one class:
    each overlaps the next by IoU 2/3 and the one after by 0.43, so greedy NMS (IoU 0.5) keeps
    every other box, and the rule needs about ``length`` rounds to settle."""
    x = torch.arange(length, dtype=torch.float32) * step
    boxes = torch.stack([x, torch.zeros(length), x + side, torch.full((length,), side)], dim=1)
    return boxes[None], torch.zeros(1, length, dtype=torch.long), torch.ones(1, length, dtype=torch.bool)


def test_nms_in_fixed_rounds_is_greedy_nms_where_settled_and_says_where_not():
    boxes, labels, valid = chain_of_boxes(12)
    exact = greedy_nms_keep(boxes, labels, valid, 0.5)
    assert exact[0].tolist() == [True, False] * 6
    keep, settled = greedy_nms_keep_in_rounds(boxes, labels, valid, 0.5, rounds=12)
    assert settled.all() and torch.equal(keep, exact)
    keep, settled = greedy_nms_keep_in_rounds(boxes, labels, valid, 0.5, rounds=3)
    assert 0 < int(settled.sum()) < 12 and settled[0, :int(settled.sum())].all()  # a settled prefix
    assert torch.equal(keep[settled], exact[settled]) and not torch.equal(keep, exact)


def test_candidates_not_settled_in_the_rounds_give_no_pseudo_labels_and_the_settled_ones_are_exact(head,
                                                                                                  monkeypatch):
    monkeypatch.setattr(head, "max_per_img", -1)
    batch, preds = random_case(head, seed=0, images=8)
    # a low threshold: many candidates per class, some overlapping (NMS has work to do)
    full = add_pseudo_labels(head, batch, preds, OLD, 0.2, 0.5)
    cut = add_pseudo_labels(head, batch, preds, OLD, 0.2, 0.5, rounds=0)  # settles only before the first overlap
    fewer = 0
    for own, all_boxes, some_boxes in zip(batch["gt_bboxes"], full["gt_bboxes"], cut["gt_bboxes"]):
        extra_all, extra_some = all_boxes[len(own):], some_boxes[len(own):]
        fewer += len(extra_some) < len(extra_all)
        for box in extra_some:  # each one given is one the settled NMS gives too
            assert np.abs(extra_all - box).max(axis=1).min() < 1e-5
    assert fewer > 0


def test_pseudo_labels_have_fixed_shapes_whatever_the_teacher_detects(head):
    batch, preds = random_case(head, seed=4)
    columns = add_pseudo_labels(head, batch, preds, OLD, 0.5, 0.5, rows=8)["gt_valid"].shape[1]
    preds[..., :head.num_classes] = -10.0  # nothing confident
    assert add_pseudo_labels(head, batch, preds, OLD, 0.5, 0.5, rows=8)["gt_valid"].shape[1] == columns
    assert columns == pad_gt_batch(batch, torch.device("cpu")).valid.shape[1] + 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_pseudo_labels_replay_in_a_cuda_graph_as_they_run_eagerly(head):
    device = torch.device("cuda")
    gpu_head = build_head(read_config("cfg/demo.yml").model.arch.head).eval().to(device)
    batch, preds = random_case(head, seed=7, images=8)
    static = {"img": batch["img"].to(device), "teacher": preds.to(device),
              **{k: v.to(device) for k, v in pad_gt_batch(batch, device).batch_entries().items()}}

    def step():
        inputs = {k: v for k, v in static.items() if k != "teacher"}
        return add_pseudo_labels(gpu_head, inputs, static["teacher"], OLD, 0.5, 0.5)

    eager = step()  # also the warm-up (the class mask is made here, once)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for key in PADDED_GT_KEYS:
        torch.testing.assert_close(captured[key], eager[key])
    assert int(captured["gt_valid"].sum()) > int(static["gt_valid"].sum())  # some were added
    static["teacher"].copy_(static["teacher"].flip(0))  # new teacher outputs, same graph
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured["gt_valid"], step()["gt_valid"])
