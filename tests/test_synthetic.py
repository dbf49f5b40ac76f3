"""The embedded synthetic benchmark: determinism, exact boxes, VOC/COCO agreement, first-use generation."""

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from nanodet.data.dataset import build_dataset
from nanodet.data.synthetic import (
    SYNTHETIC_CLASSES, SyntheticSpec, ensure_generated, generate, read_spec, render_image,
)
from nanodet.data.synthetic.statistics import read_labels, set_statistics

SMALL = SyntheticSpec(train=40, test=24, seed=3, width=160, height=128)
PIPELINE = {"normalize": [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]}


def digest_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "set", SMALL, workers=1)


def voc_objects(root: Path, image_id: str):
    tree = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
    objects = []
    for obj in tree.iter("object"):
        box = obj.find("bndbox")
        objects.append((SYNTHETIC_CLASSES.index(obj.findtext("name")),
                        [int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]))
    return objects


def test_same_arguments_give_byte_identical_files(small_set, tmp_path):
    again = generate(tmp_path / "again", SMALL, workers=2)  # also independent of the worker count
    assert digest_tree(small_set) == digest_tree(again)
    other = generate(tmp_path / "other", SyntheticSpec(**{**SMALL.to_json(), "seed": 4}), workers=1)
    assert digest_tree(other) != digest_tree(small_set)


def test_layout_and_marker(small_set):
    assert (small_set / "ImageSets/Main/trainval.txt").read_text().split() == [f"trainval_{i:06d}" for i in range(40)]
    assert len((small_set / "ImageSets/Main/test.txt").read_text().split()) == 24
    assert len(list((small_set / "JPEGImages").glob("*.jpg"))) == 64
    assert read_spec(small_set) == SMALL


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_voc_and_coco_annotations_agree(small_set, split):
    coco = json.loads((small_set / "annotations" / f"{split}.json").read_text())
    assert [c["name"] for c in coco["categories"]] == SYNTHETIC_CLASSES
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append((ann["category_id"] - 1, [x, y, x + w, y + h]))
    for image in coco["images"]:
        image_id = Path(image["file_name"]).stem
        assert voc_objects(small_set, image_id) == by_image.get(image["id"], [])


def test_one_to_eight_objects_with_boxes_inside_the_image(small_set):
    for split, count in (("trainval", 40), ("test", 24)):
        for i in range(count):
            objects = voc_objects(small_set, f"{split}_{i:06d}")
            assert 1 <= len(objects) <= 8
            for _, (x0, y0, x1, y1) in objects:
                assert 0 <= x0 < x1 <= SMALL.width and 0 <= y0 < y1 <= SMALL.height


@pytest.mark.parametrize("seed", range(12))
def test_boxes_enclose_the_drawn_objects_tightly(seed):
    img, objects = render_image(np.random.default_rng([99, seed]), 200, 160, clean=True)
    drawn = img.max(axis=2) > 0
    inside = np.zeros_like(drawn)
    for _, (x0, y0, x1, y1) in objects:
        inside[y0:y1, x0:x1] = True
    assert not (drawn & ~inside).any(), "object pixels outside every box"
    if len(objects) == 1:  # unoccluded: each edge of the box touches the object
        x0, y0, x1, y1 = objects[0][1]
        crop = drawn[y0:y1, x0:x1]
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_objects_per_image_and_their_sizes_follow_the_spec():
    counts = []
    for seed in range(12):
        _, objects = render_image(np.random.default_rng([5, seed]), 160, 160, clean=True,
                                  objects_per_image=(2, 3), object_size=(20, 30))
        counts.append(len(objects))
        for _, (x0, y0, x1, y1) in objects:  # a rotated shape's box is up to sqrt(2) times its longer side
            assert max(x1 - x0, y1 - y0) <= 30 * 1.42 + 1
    assert set(counts) == {2, 3}


def test_a_spec_with_other_objects_round_trips_and_the_default_marker_is_unchanged(tmp_path):
    assert "object_size" not in SyntheticSpec().to_json() and "objects_per_image" not in SyntheticSpec().to_json()
    spec = SyntheticSpec(train=6, test=4, seed=1, width=96, height=96, objects_per_image=[1, 2], object_size=[16, 40])
    assert spec.objects_per_image == (1, 2) and spec != SyntheticSpec(train=6, test=4, seed=1, width=96, height=96)
    root = generate(tmp_path / "set", spec, workers=1)
    assert read_spec(root) == spec
    counts = [len(voc_objects(root, f"trainval_{i:06d}")) for i in range(6)]
    assert all(1 <= n <= 2 for n in counts)
    for bad in ({"object_size": [40, 16]}, {"object_size": [2, 16]}, {"objects_per_image": [0, 3]},
                {"objects_per_image": 3}, {"object_size": [10.5, 20]}):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=f"SyntheticSpec {field} must be two integers"):
            SyntheticSpec(**bad)


def test_a_spec_without_clutter_draws_a_smoother_background_and_round_trips():
    def roughness(clutter):  # mean Laplacian outside the objects' boxes, over a few images
        values = []
        for seed in range(6):
            img, objects = render_image(np.random.default_rng([9, seed]), 160, 160, clutter=clutter)
            outside = np.ones(img.shape[:2], bool)
            for _, (x0, y0, x1, y1) in objects:
                outside[y0:y1, x0:x1] = False
            lap = np.abs(cv2.Laplacian(cv2.GaussianBlur(img, (5, 5), 0).astype(np.float32), cv2.CV_32F))
            values.append(lap.max(axis=2)[outside].mean())
        return float(np.mean(values))

    assert roughness(clutter=False) < 0.7 * roughness(clutter=True)
    spec = SyntheticSpec(train=2, test=2, clutter=False)
    assert spec.to_json()["clutter"] is False and "clutter" not in SyntheticSpec().to_json()
    with pytest.raises(ValueError, match="SyntheticSpec clutter must be true or false"):
        SyntheticSpec(clutter="no")


def test_make_synthetic_takes_the_easier_sets_settings(tmp_path, capsys):
    from nanodet.tools import make_synthetic

    args = ["--train", "4", "--test", "2", "--width", "96", "--height", "96", "--workers", "1"]
    make_synthetic.main(["--out", str(tmp_path / "easy"), *args, "--objects-per-image", "1", "2",
                         "--object-size", "16", "40", "--no-clutter"])
    assert read_spec(tmp_path / "easy") == SyntheticSpec(train=4, test=2, width=96, height=96, objects_per_image=(1, 2),
                                                         object_size=(16, 40), clutter=False)
    with pytest.raises(SystemExit):
        make_synthetic.main(["--out", str(tmp_path / "bad"), *args, "--object-size", "40", "16"])
    assert "SyntheticSpec object_size must be two integers" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_every_class_appears_in_both_splits_and_objects_co_occur(tmp_path):
    root = generate(tmp_path / "set", SyntheticSpec(train=150, test=150, seed=0, width=160, height=160), workers=1)
    for split in ("trainval", "test"):
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        counts = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=20)
        assert (counts > 0).all(), counts
        assert counts.max() < 3 * counts.min() + 10  # roughly balanced
        classes_per_image = {}
        for a in coco["annotations"]:
            classes_per_image.setdefault(a["image_id"], set()).add(a["category_id"])
        assert np.mean([len(c) > 1 for c in classes_per_image.values()]) > 0.5


def test_config_dataset_generates_missing_data_on_first_use(tmp_path):
    root = tmp_path / "data" / "synthetic_small"
    node = {"name": "SyntheticDataset", "root": str(root), "split": "trainval",
            "synthetic": SMALL.to_json(), "input_size": [160, 128], "pipeline": PIPELINE}
    dataset = build_dataset(node, "train", class_names=SYNTHETIC_CLASSES)
    assert read_spec(root) == SMALL and len(dataset) == 40
    sample = dataset[0]
    assert sample["img"].shape[0] == 3 and len(sample["gt_labels"]) >= 1
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    test_set = build_dataset(dict(node, split="test"), "val", class_names=SYNTHETIC_CLASSES)
    assert len(test_set) == 24 and (root / "synthetic.json").stat().st_mtime_ns == stamp  # reused

    changed = dict(node, synthetic={**SMALL.to_json(), "seed": 5})
    with pytest.raises(FileExistsError, match="synthetic_small"):
        build_dataset(changed, "train", class_names=SYNTHETIC_CLASSES)


def test_bad_synthetic_arguments_are_named(tmp_path):
    node = {"name": "SyntheticDataset", "root": str(tmp_path / "s"), "synthetic": {"trian": 5},
            "input_size": [160, 128], "pipeline": PIPELINE}
    with pytest.raises(ValueError, match="trian"):
        build_dataset(node, "train", class_names=SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="class_names"):
        build_dataset(dict(node, synthetic={}), "train", class_names=["a", "b"])


def test_existing_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        ensure_generated(tmp_path / "busy", SMALL)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"


# --------------------------------------------------------------- the VOC-shaped profile
def test_voc_scenes_follow_voc2007_trainval_statistics():
    from nanodet.data.synthetic.scenes import PERSON, VOC_IMAGES, VOC_TRAINVAL_IMAGES, sample_voc_scene

    rng = np.random.default_rng(11)
    scenes = [sample_voc_scene(rng) for _ in range(6000)]
    stats = set_statistics(scenes)
    assert abs(stats["objects_per_image"] - 2.52) < 0.12 and abs(stats["distinct_classes_per_image"] - 1.46) < 0.05
    share = np.array(stats["images_per_class"]) / len(scenes)
    voc_share = VOC_IMAGES / VOC_TRAINVAL_IMAGES
    assert np.all(np.abs(share / voc_share - 1) < 0.25), (share / voc_share).round(2)
    assert abs(share[PERSON] - 0.40) < 0.03 and share.argmax() == PERSON
    assert stats["max_objects_per_image"] >= 8  # a long tail, not a uniform count
    # Scene groups co-occur: vehicles with vehicles, never a vehicle-only scene with an indoor class.
    vehicle, indoor = {0, 1, 3, 5, 6, 13, 18}, {4, 8, 10, 15, 17, 19}
    assert not any(set(s) & vehicle and set(s) & indoor for s in scenes)
    assert sum(len(set(s) & vehicle) >= 2 for s in scenes) > 200
    assert [sample_voc_scene(np.random.default_rng(5)) for _ in range(3)] == \
        [sample_voc_scene(np.random.default_rng(5)) for _ in range(3)]


def test_set_statistics_count_what_a_15p1_task_image_carries():
    # Class 15 is task 1's, 16 task 2's; classes below 15 are task 0's.
    images = [[15, 0, 0, 3], [15, 15], [16, 15, 2], [1, 2], []]
    stats = set_statistics(images)
    assert stats["images"] == 5 and stats["objects_per_image"] == pytest.approx(11 / 5)
    assert stats["distinct_classes_per_image"] == pytest.approx((3 + 1 + 3 + 2 + 0) / 5)
    assert stats["images_per_class"][15] == 3 and stats["objects_per_class"][15] == 4
    task1, task2 = stats["15p1_tasks"][:2]
    # Task 1's images hold 3, 0 and 1 objects of task-0 classes, beside 4 boxes of class 15.
    assert (task1["images"], task1["old_objects_per_image"], task1["images_with_an_old_object"]) == (3, 1.333, 0.667)
    assert task1["old_objects_per_labelled_box"] == pytest.approx(4 / 4)
    # For task 2 the earlier one-class task's objects are old too.
    assert (task2["images"], task2["old_objects_per_image"]) == (1, 2.0)


def test_a_voc_profile_set_is_generated_read_back_and_its_spec_checked(tmp_path):
    spec = SyntheticSpec(train=12, test=4, seed=2, width=160, height=160, profile="voc")
    assert spec.to_json()["profile"] == "voc" and "profile" not in SyntheticSpec().to_json()
    root = generate(tmp_path / "voc", spec, workers=1)
    assert read_spec(root) == spec
    labels = read_labels(root, "trainval")
    assert len(labels) == 12 and all(labels) and all(0 <= c < 20 for image in labels for c in image)
    dense = read_labels(generate(tmp_path / "dense", SyntheticSpec(train=12, test=4, seed=2, width=160, height=160),
                                 workers=1), "trainval")
    assert labels != dense
    with pytest.raises(ValueError, match="SyntheticSpec profile must be one of"):
        SyntheticSpec(profile="coco")
    with pytest.raises(ValueError, match="profile 'voc' needs objects: drawn"):
        SyntheticSpec(profile="voc", objects="fashion_mnist")
    with pytest.raises(ValueError, match="objects_per_image applies to the dense profile"):
        SyntheticSpec(profile="voc", objects_per_image=(1, 3))
