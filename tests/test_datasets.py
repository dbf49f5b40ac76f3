import inspect
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from nanodet.data.dataset import (DATASETS, AnnotationError, CocoDataset, XMLDataset,
                                  YoloDataset, build_dataset)
from nanodet.util.box_transform import warp_boxes

from fixtures_data import make_detection_images, write_coco, write_voc


def xml_dataset(data, pipeline, ann_path=None, **kwargs):
    return XMLDataset(img_path=data.img_dir, ann_path=ann_path or data.voc_xml_dir,
                      input_size=[320, 320], pipeline=pipeline, class_names=data.class_names,
                      **kwargs)


def coco_dataset(data, pipeline, ann_path=None, **kwargs):
    kwargs.setdefault("class_names", data.class_names)
    return CocoDataset(img_path=data.img_dir, ann_path=ann_path or data.coco_json,
                       input_size=[320, 320], pipeline=pipeline, **kwargs)


def yolo_dataset(data, pipeline, **kwargs):
    return YoloDataset(img_path=data.img_dir, ann_path=data.yolo_dir, input_size=[320, 320],
                       pipeline=pipeline, class_names=data.class_names, **kwargs)


def assert_records_match_gt(records, gt, check_difficult=True):
    assert [r.file_name for r in records] == [g["file_name"] for g in gt]
    for rec, g in zip(records, gt):
        assert (rec.height, rec.width) == (g["height"], g["width"])
        np.testing.assert_allclose(rec.boxes, g["boxes"], atol=1e-3)
        np.testing.assert_array_equal(rec.labels, g["labels"])
        if check_difficult:
            np.testing.assert_array_equal(rec.difficult, g["difficult"])


# ------------------------------------------------------------------ parsing
def test_every_format_parses_to_the_ground_truth(synthetic_data, eval_pipeline):
    data = synthetic_data
    assert any(g["difficult"].any() for g in data.gt), "fixture should hold difficult boxes"
    assert_records_match_gt(xml_dataset(data, eval_pipeline).records, data.gt)
    assert_records_match_gt(
        xml_dataset(data, eval_pipeline, ann_path=data.voc_image_set).records, data.gt)
    assert_records_match_gt(coco_dataset(data, eval_pipeline).records, data.gt)
    # YOLO has no difficult flag.
    yolo = yolo_dataset(data, eval_pipeline).records
    assert_records_match_gt(yolo, data.gt, check_difficult=False)
    assert not any(r.difficult.any() for r in yolo)


def test_records_have_typed_arrays_and_unique_ids(synthetic_data, eval_pipeline):
    for dataset in (xml_dataset(synthetic_data, eval_pipeline),
                    coco_dataset(synthetic_data, eval_pipeline),
                    yolo_dataset(synthetic_data, eval_pipeline)):
        ids = [r.id for r in dataset.records]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
        for rec in dataset.records:
            assert rec.boxes.dtype == np.float32 and rec.boxes.shape == (len(rec.labels), 4)
            assert rec.labels.dtype == np.int64 and rec.difficult.dtype == bool
        assert dataset.class_names == synthetic_data.class_names


def test_coco_matches_categories_by_name_in_any_order_and_drops_extra(
        synthetic_data, eval_pipeline, tmp_path, caplog):
    data = synthetic_data
    path = write_coco(tmp_path / "shuffled.json", data.gt, data.class_names,
                      category_ids=[17, 3, 9], extra_categories=["zebra", "yak"])
    with caplog.at_level(logging.WARNING):
        dataset = coco_dataset(data, eval_pipeline, ann_path=path)
    assert_records_match_gt(dataset.records, data.gt)
    warnings = [r for r in caplog.records if "zebra" in r.getMessage()]
    assert len(warnings) == 1 and "yak" in warnings[0].getMessage()


def test_coco_class_missing_from_json_is_fine(synthetic_data, eval_pipeline):
    names = synthetic_data.class_names + ["purple"]
    dataset = coco_dataset(synthetic_data, eval_pipeline, class_names=names)
    assert dataset.class_names == names
    assert_records_match_gt(dataset.records, synthetic_data.gt)


def test_coco_without_class_names_uses_json_categories_sorted_by_id(
        synthetic_data, eval_pipeline, tmp_path):
    path = write_coco(tmp_path / "c.json", synthetic_data.gt, synthetic_data.class_names,
                      category_ids=[5, 1, 3])
    dataset = coco_dataset(synthetic_data, eval_pipeline, ann_path=path, class_names=None)
    assert dataset.class_names == ["green", "blue", "red"]


def test_coco_crowd_boxes_are_difficult_and_not_trained(synthetic_data, eval_pipeline):
    dataset = coco_dataset(synthetic_data, eval_pipeline)
    idx = next(i for i, r in enumerate(dataset.records) if r.difficult.any())
    rec, meta = dataset.records[idx], dataset[idx]
    assert len(meta["gt_bboxes"]) == (~rec.difficult).sum()
    assert len(meta["gt_bboxes_ignore"]) == rec.difficult.sum()
    np.testing.assert_array_equal(meta["gt_labels"], rec.labels[~rec.difficult])


def test_voc_difficult_boxes_are_flagged_and_trained_as_upstream(synthetic_data, eval_pipeline):
    dataset = xml_dataset(synthetic_data, eval_pipeline)
    idx = next(i for i, r in enumerate(dataset.records) if r.difficult.any())
    meta = dataset[idx]
    assert len(meta["gt_bboxes"]) == len(dataset.records[idx].labels)
    assert len(meta["gt_bboxes_ignore"]) == 0


# ------------------------------------------------------------------ samples
def test_val_sample_is_upstream_meta_dict(synthetic_data, eval_pipeline):
    dataset = xml_dataset(synthetic_data, eval_pipeline, mode="val")
    rec, meta = dataset.records[0], dataset[0]
    assert set(meta) >= {"img", "img_info", "gt_bboxes", "gt_labels", "warp_matrix"}
    assert meta["img_info"] == {"file_name": rec.file_name, "height": rec.height,
                                "width": rec.width, "id": rec.id}
    img = meta["img"]
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32 and img.shape[0] == 3
    # keep_ratio: the longer side fits 320, the other is scaled by the same factor.
    ratio = min(320 / rec.width, 320 / rec.height)
    assert img.shape[1:] == (int(rec.height * ratio), int(rec.width * ratio))
    # The matrix scales uniformly to fit that (integer) output and centres the image in it.
    out_h, out_w = img.shape[1:]
    scale = min(out_w / rec.width, out_h / rec.height)
    shift = [(out_w - scale * rec.width) / 2, (out_h - scale * rec.height) / 2]
    expected = np.array([[scale, 0, shift[0]], [0, scale, shift[1]], [0, 0, 1]])
    assert meta["warp_matrix"].dtype == np.float32 and meta["warp_matrix"].shape == (3, 3)
    np.testing.assert_allclose(meta["warp_matrix"], expected, atol=1e-5)
    assert meta["gt_bboxes"].dtype == np.float32 and meta["gt_labels"].dtype == np.int64
    np.testing.assert_allclose(meta["gt_bboxes"], rec.boxes * scale + shift * 2, atol=1e-3)
    np.testing.assert_array_equal(meta["gt_labels"], rec.labels)


def test_val_mode_ignores_random_augmentation_keys(synthetic_data, train_pipeline):
    dataset = xml_dataset(synthetic_data, train_pipeline, mode="val")
    first, second = dataset[3], dataset[3]
    torch.testing.assert_close(first["img"], second["img"])
    np.testing.assert_array_equal(first["gt_bboxes"], second["gt_bboxes"])


def test_train_mode_augments_reproducibly_from_the_seed(synthetic_data, train_pipeline):
    import random
    dataset = xml_dataset(synthetic_data, train_pipeline, mode="train")
    samples = []
    for seed in (1, 1, 2):
        random.seed(seed)
        samples.append(dataset[0])
    torch.testing.assert_close(samples[0]["img"], samples[1]["img"])
    np.testing.assert_array_equal(samples[0]["warp_matrix"], samples[1]["warp_matrix"])
    assert not np.array_equal(samples[0]["warp_matrix"], samples[2]["warp_matrix"])
    # The boxes are the record's boxes mapped by the stored matrix.
    for sample in samples:
        h, w = sample["img"].shape[1:]
        expected = warp_boxes(dataset.records[0].boxes, sample["warp_matrix"].astype(np.float64),
                              w, h)
        np.testing.assert_allclose(sample["gt_bboxes"], expected, atol=1e-2)


def test_missing_image_raises_file_not_found_naming_it(synthetic_data, eval_pipeline, tmp_path):
    img_dir = tmp_path / "images"
    shutil.copytree(synthetic_data.img_dir, img_dir)
    dataset = XMLDataset(img_path=str(img_dir), ann_path=synthetic_data.voc_xml_dir,
                         input_size=[320, 320], pipeline=eval_pipeline,
                         class_names=synthetic_data.class_names)
    os.remove(img_dir / dataset.records[2].file_name)
    with pytest.raises(FileNotFoundError, match=dataset.records[2].file_name):
        dataset[2]


# ------------------------------------------------------------------ class subsets
def expected_subset(gt, keep):
    out = []
    for g in gt:
        mask = np.isin(g["labels"], keep)
        if mask.any():
            out.append(dict(g, boxes=g["boxes"][mask], labels=g["labels"][mask],
                            difficult=g["difficult"][mask]))
    return out


@pytest.mark.parametrize("keep", [[0], [1, 2], [2, 0]])
def test_keep_classes_keeps_images_with_those_classes_and_only_their_boxes(
        synthetic_data, eval_pipeline, keep):
    dataset = xml_dataset(synthetic_data, eval_pipeline, keep_classes=keep)
    expected = expected_subset(synthetic_data.gt, keep)
    n_boxes = sum(len(g["labels"]) for g in expected)
    assert 0 < n_boxes < sum(len(g["labels"]) for g in synthetic_data.gt)
    if keep == [0]:
        assert len(expected) < len(synthetic_data.gt)  # some images hold no class-0 box
    assert_records_match_gt(dataset.records, expected)  # labels stay global indices
    assert dataset.keep_classes == sorted(keep)
    for i in range(len(dataset)):
        assert set(dataset[i]["gt_labels"].tolist()) <= set(keep)


def test_subset_equals_constructor_subset_without_touching_the_parent(
        synthetic_data, eval_pipeline):
    full = coco_dataset(synthetic_data, eval_pipeline)
    n_boxes = sum(len(r.labels) for r in full.records)
    task = full.subset([1])
    direct = coco_dataset(synthetic_data, eval_pipeline, keep_classes=[1])
    assert [r.id for r in task.records] == [r.id for r in direct.records]
    for a, b in zip(task.records, direct.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert len(full) == len(synthetic_data.gt)
    assert sum(len(r.labels) for r in full.records) == n_boxes
    assert full.keep_classes is None
    # A subset of a subset keeps the intersection of the classes.
    both = full.subset([0, 1]).subset([1, 2])
    assert both.keep_classes == [1]
    assert [r.id for r in both.records] == [r.id for r in task.records]


@pytest.mark.parametrize("keep", [[], [3], [-1]])
def test_keep_classes_rejects_empty_or_unknown_indices(synthetic_data, eval_pipeline, keep):
    with pytest.raises(ValueError, match="keep_classes"):
        xml_dataset(synthetic_data, eval_pipeline, keep_classes=keep)


# ------------------------------------------------------------------ XML errors
def write_xml(path, body):
    path.write_text(f"<annotation><filename>img.png</filename>{body}</annotation>")
    return path


SIZE = "<size><width>100</width><height>80</height><depth>3</depth></size>"


def obj(name, box=(10, 10, 50, 50), difficult=0):
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult>"
            f"<bndbox>{coords}</bndbox></object>")


def xml_dir_dataset(tmp_path, pipeline, **kwargs):
    return XMLDataset(img_path=str(tmp_path), ann_path=str(tmp_path), input_size=[320, 320],
                      pipeline=pipeline, class_names=["red", "green", "blue"], **kwargs)


def test_malformed_xml_names_the_file(tmp_path, eval_pipeline):
    (tmp_path / "broken.xml").write_text("<annotation><size>")
    with pytest.raises(AnnotationError, match="broken.xml.*malformed"):
        xml_dir_dataset(tmp_path, eval_pipeline)


def test_xml_without_size_names_the_file(tmp_path, eval_pipeline):
    write_xml(tmp_path / "nosize.xml", obj("red"))
    with pytest.raises(AnnotationError, match="nosize.xml.*size"):
        xml_dir_dataset(tmp_path, eval_pipeline)


def test_unknown_xml_class_names_file_class_and_known_classes(tmp_path, eval_pipeline):
    write_xml(tmp_path / "a.xml", SIZE + obj("red") + obj("unicorn"))
    with pytest.raises(AnnotationError) as info:
        xml_dir_dataset(tmp_path, eval_pipeline)
    message = str(info.value)
    assert "a.xml" in message and "unicorn" in message and "green" in message


def test_unknown_xml_class_can_be_ignored_with_a_warning(tmp_path, eval_pipeline, caplog):
    write_xml(tmp_path / "a.xml", SIZE + obj("red") + obj("unicorn"))
    with caplog.at_level(logging.WARNING):
        dataset = xml_dir_dataset(tmp_path, eval_pipeline, ignore_unknown_classes=True)
    assert dataset.records[0].labels.tolist() == [0]
    assert any("unicorn" in r.getMessage() for r in caplog.records)


def test_degenerate_xml_box_is_skipped_with_a_warning_and_others_clipped(
        tmp_path, eval_pipeline, caplog):
    body = SIZE + obj("red", (30, 10, 30, 40)) + obj("green", (-5, 10, 150, 90), difficult=1)
    write_xml(tmp_path / "flat.xml", body)
    with caplog.at_level(logging.WARNING):
        dataset = xml_dir_dataset(tmp_path, eval_pipeline)
    rec = dataset.records[0]
    assert rec.labels.tolist() == [1] and rec.difficult.tolist() == [True]
    np.testing.assert_array_equal(rec.boxes, [[0, 10, 100, 80]])
    assert any("flat.xml" in r.getMessage() for r in caplog.records)


def test_image_set_entry_without_xml_names_the_missing_file(synthetic_data, eval_pipeline,
                                                             tmp_path):
    root = tmp_path / "VOC"
    write_voc(str(root), synthetic_data.gt[:2], synthetic_data.class_names)
    image_set = root / "ImageSets" / "Main" / "trainval.txt"
    image_set.write_text(image_set.read_text() + "ghost_0001\n")
    with pytest.raises(FileNotFoundError, match="ghost_0001.xml"):
        xml_dataset(synthetic_data, eval_pipeline, ann_path=str(image_set))


# ------------------------------------------------------------------ COCO / YOLO errors
def test_malformed_coco_json_names_the_file(synthetic_data, eval_pipeline, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(AnnotationError, match="bad.json.*malformed JSON"):
        coco_dataset(synthetic_data, eval_pipeline, ann_path=str(path))


def test_coco_json_without_images_names_the_file(synthetic_data, eval_pipeline, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"categories": []}))
    with pytest.raises(AnnotationError, match="empty.json.*images"):
        coco_dataset(synthetic_data, eval_pipeline, ann_path=str(path))


def yolo_in(tmp_path, labels):
    """A one-image YOLO dataset with the given label file text (None: no label file)."""
    make_detection_images(tmp_path / "images", 1, ["red", "green", "blue"], seed=0)
    (tmp_path / "labels").mkdir()
    if labels is not None:
        (tmp_path / "labels" / "img_0000.txt").write_text(labels)
    return dict(img_path=str(tmp_path / "images"), ann_path=str(tmp_path / "labels"),
                input_size=[320, 320], class_names=["red", "green", "blue"])


@pytest.mark.parametrize("bad_line", ["0 0.5 0.5 0.2", "x 0.5 0.5 0.2 0.2", "3 0.5 0.5 0.2 0.2",
                                      "1.5 0.5 0.5 0.2 0.2", "0 0.5 0.5 -0.2 0.2"])
def test_bad_yolo_line_names_file_and_line_number(tmp_path, eval_pipeline, bad_line):
    kwargs = yolo_in(tmp_path, f"0 0.5 0.5 0.2 0.2\n\n{bad_line}\n")
    with pytest.raises(AnnotationError, match=r"img_0000\.txt:3"):
        YoloDataset(pipeline=eval_pipeline, **kwargs)


def test_yolo_image_without_label_file_has_no_boxes(tmp_path, eval_pipeline):
    dataset = YoloDataset(pipeline=eval_pipeline, mode="val", **yolo_in(tmp_path, None))
    assert len(dataset) == 1 and dataset.records[0].boxes.shape == (0, 4)
    meta = dataset[0]
    assert meta["gt_bboxes"].shape == (0, 4) and meta["gt_labels"].shape == (0,)


# ------------------------------------------------------------------ builder
def test_build_dataset_by_name_with_injected_class_names_and_subset(synthetic_data,
                                                                     eval_pipeline):
    cfg = {"name": "VOCDataset", "img_path": synthetic_data.img_dir,
           "ann_path": synthetic_data.voc_image_set, "input_size": [320, 320],
           "keep_ratio": True, "pipeline": eval_pipeline}
    dataset = build_dataset(cfg, "val", class_names=synthetic_data.class_names, keep_classes=[2])
    assert isinstance(dataset, XMLDataset) and dataset.mode == "val"
    assert_records_match_gt(dataset.records, expected_subset(synthetic_data.gt, [2]))
    assert cfg["name"] == "VOCDataset" and "class_names" not in cfg  # the node is not mutated


def test_build_dataset_rejects_unknown_name_and_conflicting_class_names(synthetic_data,
                                                                         eval_pipeline):
    cfg = {"name": "XMLDataset", "img_path": synthetic_data.img_dir,
           "ann_path": synthetic_data.voc_xml_dir, "input_size": [320, 320],
           "pipeline": eval_pipeline, "class_names": ["a", "b", "c"]}
    with pytest.raises(ValueError, match="class_names"):
        build_dataset(cfg, "train", class_names=synthetic_data.class_names)
    with pytest.raises(ValueError, match="PascalDataset"):
        build_dataset(dict(cfg, name="PascalDataset"), "train")


def test_dataset_constructors_list_every_argument_explicitly():
    # The config checker validates YAML keys against these signatures.
    common = {"img_path", "ann_path", "input_size", "pipeline", "keep_ratio",
              "use_instance_mask", "use_seg_mask", "use_keypoint", "load_mosaic", "mode",
              "class_names", "keep_classes"}
    for cls in set(DATASETS.values()):
        params = inspect.signature(cls.__init__).parameters.values()
        assert not any(p.kind == p.VAR_KEYWORD for p in params), cls
        if cls is not DATASETS["SyntheticDataset"]:  # it derives its paths from ``root``
            assert common <= {p.name for p in params}, cls


def test_unknown_pipeline_key_is_rejected(synthetic_data, eval_pipeline):
    with pytest.raises(ValueError, match="flipp"):
        xml_dataset(synthetic_data, dict(eval_pipeline, flipp=0.5))


# ------------------------------------------------------------------ silent data changes
def test_a_coco_file_none_of_whose_categories_is_a_class_is_refused(synthetic_data, eval_pipeline, tmp_path):
    data = json.loads(open(synthetic_data.coco_json).read())
    for category in data["categories"]:
        category["name"] = category["name"].upper()  # "RED" is not "red"
    path = tmp_path / "upper.json"
    path.write_text(json.dumps(data))
    for mode in ("train", "val"):
        with pytest.raises(AnnotationError, match=r"upper\.json: none of its categories \['BLUE', 'GREEN', 'RED'\] "
                                                  r"is in class_names \['red', 'green', 'blue'\]"):
            coco_dataset(synthetic_data, eval_pipeline, ann_path=str(path), mode=mode)


def test_a_training_set_without_a_box_of_its_classes_is_refused_in_every_format(tmp_path, eval_pipeline):
    with pytest.raises(AnnotationError, match="none of its 1 images has a box of class_names .*nothing to train on"):
        YoloDataset(pipeline=eval_pipeline, mode="train", **yolo_in(tmp_path, ""))


def test_coco_annotations_of_no_listed_image_are_counted_in_a_warning(synthetic_data, eval_pipeline, tmp_path,
                                                                       caplog):
    data = json.loads(open(synthetic_data.coco_json).read())
    extra = dict(data["annotations"][0], id=10**6, image_id=999)
    data["annotations"] += [extra, dict(extra, id=10**6 + 1)]
    path = tmp_path / "orphans.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        dataset = coco_dataset(synthetic_data, eval_pipeline, ann_path=str(path))
    [warning] = [r.getMessage() for r in caplog.records if "image_id" in r.getMessage()]
    assert "dropped 2 annotations whose image_id is not in 'images' (e.g. 999)" in warning
    assert sum(len(r.labels) for r in dataset.records) == len(synthetic_data_boxes(synthetic_data))


def synthetic_data_boxes(data):
    return [box for image in data.gt for box in image["boxes"]]


def test_yolo_boxes_clipped_by_more_than_a_pixel_are_counted_in_a_warning(tmp_path, eval_pipeline, caplog):
    # img_0000 is 185 pixels wide: the first box overshoots by 0.4 px (rounding), the next two by 46 and 23 px.
    labels = "0 0.5 0.5 1.0046875 0.5\n1 0.5 0.5 1.5 0.25\n2 0.875 0.5 0.5 0.25\n"
    with caplog.at_level(logging.WARNING):
        dataset = YoloDataset(pipeline=eval_pipeline, **yolo_in(tmp_path, labels))
    [warning] = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert "2 boxes extend more than 1 pixel past their image and were clipped to it" in warning
    assert warning.endswith("img_0000.txt:2")
    assert dataset.records[0].boxes[:, [0, 2]].max() <= dataset.records[0].width  # still clipped
