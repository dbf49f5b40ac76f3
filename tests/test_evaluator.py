"""Both evaluators against APs computed by hand on tiny, hand-made cases."""

import functools
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from nanodet.evaluator import (CocoDetectionEvaluator, VOCDetectionEvaluator,
                               build_evaluator)
from nanodet.evaluator.voc_detection import average_precision

# The COCO evaluator on both backends: every hand-made case must give the same numbers.
COCO_BACKENDS = ["pycocotools", "faster_coco_eval"]
COCO_EVALUATORS = [functools.partial(CocoDetectionEvaluator, backend=b) for b in COCO_BACKENDS]
EVALUATORS = [*COCO_EVALUATORS, VOCDetectionEvaluator]


@dataclass
class FakeRecord:
    id: int
    boxes: list
    labels: list
    difficult: list = None
    file_name: str = "img.jpg"
    height: int = 120
    width: int = 120

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64)
        if self.difficult is None:
            self.difficult = np.zeros(len(self.labels), bool)
        self.difficult = np.asarray(self.difficult, bool)


@dataclass
class FakeDataset:
    records: list
    class_names: list = field(default_factory=lambda: ["cat", "dog", "bird", "fish"])


CAT, DOG, BIRD, FISH = range(4)


def two_image_case():
    """Image ids 0 and 5 (0 on purpose: ids are not required to start at 1).

    image 0: cat A [0,0,10,10], cat B [20,20,30,30], dog D [0,0,20,20], bird G [50,50,90,90]
    image 5: cat C [0,0,10,10], dog E [10,10,30,30] (difficult), dog F [40,40,60,60]
    No fish GT at all. Cat and dog boxes are "small" for COCO (area <= 32^2), bird is "medium".
    """
    dataset = FakeDataset([
        FakeRecord(0, [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 20, 20], [50, 50, 90, 90]],
                   [CAT, CAT, DOG, BIRD]),
        FakeRecord(5, [[0, 0, 10, 10], [10, 10, 30, 30], [40, 40, 60, 60]],
                   [CAT, DOG, DOG], [False, True, False]),
    ])
    # Cat, in score order (3 GT):
    #   .9 img0 on A -> TP; .8 img0 on A again -> FP (duplicate);
    #   .7 img5 nowhere -> FP; .6 img5 on C -> TP; B is missed.
    #   recall    1/3, 1/3, 1/3, 2/3
    #   precision 1,   1/2, 1/3, 1/2
    #   envelope: 1 up to recall 1/3, then 1/2 up to 2/3 -> AP = 1/3 * 1 + 1/3 * 1/2 = 1/2
    #   (COCO's 101 points give the same: 34 points at 1, 33 at 1/2 -> 50.5 / 101.)
    # Dog (2 non-difficult GT: D, F), in score order:
    #   .95 img5 on E (difficult) -> ignored; .9 img5 nowhere -> FP;
    #   .85 img0 on D -> TP; .5 img5 on F -> TP.
    #   recall 0, 1/2, 1; precision 0, 1/2, 2/3 -> envelope 2/3 everywhere -> AP = 2/3
    #   (were the difficult hit an FP, AP would be 1/2).
    # Bird: one exact hit -> AP 1. Fish: a detection but no GT -> AP undefined (nan).
    results = {
        0: {CAT: [[0, 0, 10, 10, .9], [0, 0, 10, 10, .8]],
            DOG: np.array([[0, 0, 20, 20, .85]]),
            BIRD: [[50, 50, 90, 90, .8]],
            FISH: [[5, 5, 15, 15, .99]]},
        5: {CAT: [[50, 50, 60, 60, .7], [0, 0, 10, 10, .6]],
            DOG: [[10, 10, 30, 30, .95], [100, 100, 110, 110, .9], [40, 40, 60, 60, .5]]},
    }
    return dataset, results


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_hand_computed_per_class_ap(evaluator_cls):
    dataset, results = two_image_case()
    metrics = evaluator_cls(dataset).evaluate(results)
    ap = metrics["per_class_AP"]
    assert ap["cat"] == pytest.approx(1 / 2)
    assert ap["dog"] == pytest.approx(2 / 3)
    assert ap["bird"] == pytest.approx(1.0)
    assert math.isnan(ap["fish"])
    # mAP is over classes that have GT: (1/2 + 2/3 + 1) / 3.
    assert metrics["mAP"] == pytest.approx(13 / 18)
    assert metrics["AP_50"] == pytest.approx(13 / 18)


@pytest.mark.parametrize("coco_evaluator", COCO_EVALUATORS)
def test_coco_size_ranges_and_ap50(coco_evaluator):
    dataset, results = two_image_case()
    metrics = coco_evaluator(dataset).evaluate(results)
    # All boxes are exact hits, so every IoU threshold agrees.
    assert metrics["AP_75"] == pytest.approx(13 / 18)
    assert metrics["per_class_AP50"]["dog"] == pytest.approx(2 / 3)
    assert metrics["AP_small"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # cat and dog only
    assert metrics["AP_m"] == pytest.approx(1.0)  # bird only
    assert math.isnan(metrics["AP_l"])  # no large GT: pycocotools' -1 becomes nan


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_non_prefix_class_subset(evaluator_cls, tmp_path):
    dataset, results = two_image_case()
    metrics = evaluator_cls(dataset).evaluate(results, save_dir=str(tmp_path),
                                              class_ids=[BIRD, CAT])
    assert set(metrics["per_class_AP"]) == {"cat", "bird"}
    assert metrics["per_class_AP"]["cat"] == pytest.approx(1 / 2)
    assert metrics["per_class_AP"]["bird"] == pytest.approx(1.0)
    assert metrics["mAP"] == pytest.approx(3 / 4)
    # Detections of dog and fish were dropped, not scored.
    saved = json.loads((tmp_path / "detections.json").read_text())
    assert len(saved) == 5
    only_subset = {img: {c: d for c, d in dets.items() if c in (BIRD, CAT)}
                   for img, dets in results.items()}
    again = evaluator_cls(dataset).evaluate(only_subset, class_ids=[BIRD, CAT])
    np.testing.assert_equal(again, metrics)  # nan-aware comparison of the nested dicts


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_perfect_detections_score_one(evaluator_cls):
    dataset, _ = two_image_case()
    results = {r.id: {c: [list(b) + [0.9] for b in r.boxes[r.labels == c]]
                      for c in set(r.labels.tolist())}
               for r in dataset.records}
    metrics = evaluator_cls(dataset).evaluate(results)
    assert metrics["mAP"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for k, v in metrics["per_class_AP"].items()
               if k != "fish")


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_detection_on_difficult_box_is_neither_tp_nor_fp(evaluator_cls):
    # One normal and one difficult cat; the top-scored detection hits the difficult one.
    # Ignored -> PR curve is just the TP -> AP 1. Counted as FP it would be 1/2.
    dataset = FakeDataset([FakeRecord(1, [[0, 0, 10, 10], [30, 30, 40, 40]], [CAT, CAT],
                                      [False, True])])
    results = {1: {CAT: [[30, 30, 40, 40, .9], [0, 0, 10, 10, .8]]}}
    metrics = evaluator_cls(dataset).evaluate(results, class_ids=[CAT])
    assert metrics["mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
@pytest.mark.parametrize("results", [{}, {0: {}, 5: {CAT: []}}])
def test_empty_results_score_zero(evaluator_cls, results, tmp_path):
    dataset, _ = two_image_case()
    metrics = evaluator_cls(dataset).evaluate(results, save_dir=str(tmp_path))
    assert metrics["mAP"] == 0.0
    assert metrics["per_class_AP"]["cat"] == 0.0
    assert json.loads((tmp_path / "detections.json").read_text()) == []


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_empty_class_ids_is_an_error(evaluator_cls):
    dataset, results = two_image_case()
    with pytest.raises(ValueError, match="empty"):
        evaluator_cls(dataset).evaluate(results, class_ids=[])


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_unknown_class_id_is_an_error(evaluator_cls):
    dataset, results = two_image_case()
    with pytest.raises(ValueError, match="outside"):
        evaluator_cls(dataset).evaluate(results, class_ids=[0, 4])


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_detections_on_images_outside_dataset_are_dropped(evaluator_cls):
    dataset, results = two_image_case()
    with_extra = {**results, 99: {CAT: [[0, 0, 10, 10, 1.0]]}}
    evaluator = evaluator_cls(dataset)
    assert evaluator.evaluate(with_extra)["mAP"] == pytest.approx(13 / 18)


def iou_072_case():
    # GT [0,0,10,10] (area 100), detection [0,0,10,7.2]: intersection 72, union 100 -> IoU 0.72.
    dataset = FakeDataset([FakeRecord(1, [[0, 0, 10, 10]], [CAT])])
    return dataset, {1: {CAT: [[0, 0, 10, 7.2, .9]]}}


@pytest.mark.parametrize("coco_evaluator", COCO_EVALUATORS)
def test_coco_iou_thresholds(coco_evaluator):
    # IoU 0.72 matches at thresholds .50 .55 .60 .65 .70 and misses at .75 ... .95:
    # AP per threshold is 1 for five of ten -> AP@[.5:.95] = 0.5, AP50 = 1, AP75 = 0.
    dataset, results = iou_072_case()
    metrics = coco_evaluator(dataset).evaluate(results)
    assert metrics["AP_50"] == pytest.approx(1.0)
    assert metrics["AP_75"] == pytest.approx(0.0)
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["per_class_AP50"]["cat"] == pytest.approx(1.0)
    assert metrics["per_class_AP"]["cat"] == pytest.approx(0.5)


def test_voc_iou_threshold():
    dataset, results = iou_072_case()
    assert VOCDetectionEvaluator(dataset).evaluate(results)["mAP"] == pytest.approx(1.0)
    strict = VOCDetectionEvaluator(dataset, iou_thr=0.75)
    assert strict.evaluate(results)["mAP"] == pytest.approx(0.0)


def test_voc07_eleven_point_differs_from_all_point():
    # 4 GT, two exact hits: recall 1/4, 1/2 at precision 1.
    # All-point: area 1/2. 11-point: recall levels 0 .. 0.5 (six of eleven) see precision 1
    # -> 6/11.
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    dataset = FakeDataset([FakeRecord(1, boxes, [CAT] * 4)])
    results = {1: {CAT: [boxes[0] + [.9], boxes[1] + [.8]]}}
    assert VOCDetectionEvaluator(dataset).evaluate(results)["mAP"] == pytest.approx(0.5)
    voc07 = VOCDetectionEvaluator(dataset, use_07_metric=True)
    assert voc07.evaluate(results)["mAP"] == pytest.approx(6 / 11)


def test_average_precision_uses_precision_envelope():
    # recall .5 @ p .5, then recall 1 @ p 2/3: the envelope lifts the first step to 2/3.
    recall, precision = np.array([.5, 1.]), np.array([.5, 2 / 3])
    assert average_precision(recall, precision) == pytest.approx(2 / 3)


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_save_dir_gets_strict_json_and_no_temp_files(evaluator_cls, tmp_path):
    dataset, results = two_image_case()
    metrics = evaluator_cls(dataset).evaluate(results, save_dir=str(tmp_path / "eval"))
    assert sorted(os.listdir(tmp_path / "eval")) == ["detections.json", "metrics.json"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert saved["per_class_AP"]["fish"] is None  # nan is written as null
    assert saved["mAP"] == pytest.approx(metrics["mAP"])


def test_build_evaluator_by_name():
    dataset, _ = two_image_case()
    cfg = {"name": "VOCDetectionEvaluator", "save_key": "mAP", "iou_thr": 0.75}
    evaluator = build_evaluator(cfg, dataset)
    assert isinstance(evaluator, VOCDetectionEvaluator)
    assert evaluator.iou_thr == 0.75 and evaluator.save_key == "mAP"
    assert cfg["name"] == "VOCDetectionEvaluator"  # the config is not consumed
    coco = build_evaluator({"name": "CocoDetectionEvaluator", "save_key": "AP_50"}, dataset)
    assert isinstance(coco, CocoDetectionEvaluator) and coco.save_key == "AP_50"
    with pytest.raises(ValueError, match="NoSuchEvaluator"):
        build_evaluator({"name": "NoSuchEvaluator"}, dataset)


def sequential_voc_ap(dataset, results, label, iou_thr=0.5):
    """The devkit's loop written plainly (one detection at a time), as a reference."""
    gts = {r.id: (r.boxes[r.labels == label], r.difficult[r.labels == label])
           for r in dataset.records}
    used = {i: np.zeros(len(b), bool) for i, (b, _) in gts.items()}
    dets = sorted(((d[4], i, d[:4]) for i, per in results.items()
                   for d in per.get(label, [])), key=lambda t: -t[0])
    tp, fp = [], []
    for _, img, box in dets:
        boxes, difficult = gts[img]
        best, best_iou = -1, 0.0
        for j, g in enumerate(boxes):
            iw = max(0.0, min(box[2], g[2]) - max(box[0], g[0]))
            ih = max(0.0, min(box[3], g[3]) - max(box[1], g[1]))
            union = ((box[2] - box[0]) * (box[3] - box[1])
                     + (g[2] - g[0]) * (g[3] - g[1]) - iw * ih)
            if iw * ih / union > best_iou:
                best, best_iou = j, iw * ih / union
        if best_iou >= iou_thr and difficult[best]:
            continue
        hit = best_iou >= iou_thr and not used[img][best]
        if hit:
            used[img][best] = True
        tp.append(hit)
        fp.append(not hit)
    npos = sum(int((~d).sum()) for _, d in gts.values())
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return average_precision(tp / npos, tp / np.maximum(tp + fp, 1))


@pytest.mark.parametrize("seed", range(5))
def test_voc_matches_sequential_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)

    def random_boxes(n):
        xy = rng.uniform(0, 80, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1)

    records, results = [], {}
    for img in range(6):
        n = int(rng.integers(1, 6))
        gt = random_boxes(n)
        records.append(FakeRecord(img, gt, rng.integers(0, 2, n), rng.random(n) < 0.2))
        # Detections: jittered copies of GT (some duplicates) plus random boxes.
        near = gt[rng.integers(0, n, 6)] + rng.normal(0, 3, (6, 4))
        boxes = np.concatenate([near, random_boxes(4)])
        labels = rng.integers(0, 2, len(boxes))
        scores = rng.random(len(boxes))
        results[img] = {c: np.column_stack([boxes, scores])[labels == c] for c in (0, 1)}
    dataset = FakeDataset(records, ["a", "b"])
    metrics = VOCDetectionEvaluator(dataset).evaluate(results)
    for label, name in enumerate(dataset.class_names):
        assert metrics["per_class_AP"][name] == pytest.approx(
            sequential_voc_ap(dataset, results, label))


def random_case(seed=0, images=60, classes=4):
    """Noisy detections around random GT, crowd (difficult) boxes and ties included."""
    rng = np.random.default_rng(seed)
    records, results = [], {}
    for i in range(images):
        n = int(rng.integers(0, 6))
        xy, wh = rng.uniform(0, 90, (n, 2)), rng.uniform(4, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, classes, n)
        records.append(FakeRecord(i, boxes, labels, difficult=rng.random(n) < 0.15))
        per_class = {c: [] for c in range(classes)}
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 4))):
                noisy = box + rng.normal(0, 4, 4)
                per_class[int(label) if rng.random() < 0.8 else int(rng.integers(classes))].append(
                    [*noisy, round(float(rng.random()), 2)])  # rounded: equal scores occur
        results[i] = per_class
    return FakeDataset(records), results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_gives_pycocotools_numbers(seed):
    dataset, results = random_case(seed)
    reference = CocoDetectionEvaluator(dataset, backend="pycocotools").evaluate(results, class_ids=[0, 1, 3])
    faster = CocoDetectionEvaluator(dataset, backend="faster_coco_eval").evaluate(results, class_ids=[0, 1, 3])
    assert reference.keys() == faster.keys()
    for key, value in reference.items():
        if isinstance(value, dict):
            assert value.keys() == faster[key].keys()
            np.testing.assert_allclose(list(faster[key].values()), list(value.values()), rtol=0, atol=1e-12,
                                       err_msg=key)
        else:
            np.testing.assert_allclose(faster[key], value, rtol=0, atol=1e-12, err_msg=key)


def test_unknown_coco_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="backend must be auto, pycocotools or faster_coco_eval, got 'fast'"):
        CocoDetectionEvaluator(FakeDataset([FakeRecord(1, [[0, 0, 9, 9]], [CAT])]), backend="fast")


@pytest.mark.parametrize("evaluator_cls", EVALUATORS)
def test_flat_detections_score_as_the_results_dict(evaluator_cls):
    from nanodet.evaluator.detections import Detections

    dataset, results = random_case(3)
    rows = [(i, c, *row) for i, per_class in results.items() for c, rows in per_class.items() for row in rows]
    table = np.asarray(rows, np.float64)
    flat = Detections(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2:6].astype(np.float32),
                      table[:, 6].astype(np.float32))
    from_dict = evaluator_cls(dataset).evaluate(results)
    from_flat = evaluator_cls(dataset).evaluate(flat)
    assert from_flat["mAP"] == pytest.approx(from_dict["mAP"], abs=1e-6)
    assert flat.to_results([r.id for r in dataset.records], 4).keys() == results.keys()
