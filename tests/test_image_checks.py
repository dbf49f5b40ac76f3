"""Every image a run will read is checked before anything trains: one error lists the bad ones."""

import shutil

import pytest

from fixtures_continual import TWO_TASKS, tiny_cfg
from nanodet.continual import ContinualRunner, build_method, parse_scenario
from nanodet.continual.data import TaskData
from nanodet.data.dataset import ImageError, XMLDataset, check_images


@pytest.fixture
def broken_copy(synthetic_data, tmp_path, eval_pipeline):
    """The synthetic set with four bad images: random bytes, empty, missing, another size."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_data.root, root)
    dataset = XMLDataset(img_path=root / "JPEGImages", ann_path=root / "Annotations", input_size=[64, 64],
                         pipeline=eval_pipeline, class_names=synthetic_data.class_names, mode="val")
    names = [r.file_name for r in dataset.records]
    images = root / "JPEGImages"
    (images / names[0]).write_bytes(bytes(range(256)) * 8)
    (images / names[1]).write_bytes(b"")
    (images / names[2]).unlink()
    import cv2
    import numpy as np
    cv2.imwrite(str(images / names[3]), np.zeros((7, 9, 3), np.uint8))
    return dataset, names


def test_one_error_lists_every_bad_image_and_why(broken_copy):
    dataset, names = broken_copy
    with pytest.raises(ImageError) as caught:
        check_images(dataset, "training", workers=2)
    message = str(caught.value)
    assert "4 of 12 training images cannot be used" in message
    for name, why in zip(names, ("not a decodable image", "empty file", "missing", "9x7 pixels, annotated")):
        assert f"{name} ({why}" in message
    assert "data.skip_bad_images: true" in message


def test_skipping_leaves_the_bad_images_out_with_a_warning(broken_copy, caplog):
    dataset, names = broken_copy
    kept = check_images(dataset, "training", skip=True, workers=2)
    assert [r.file_name for r in kept.records] == names[4:]
    assert "leaving out 4 of 12 training images" in caplog.text


def test_a_run_stops_on_a_bad_test_image_before_its_first_step(tmp_path):
    cfg = tiny_cfg(tmp_path / "tiny")
    data = TaskData(cfg, parse_scenario(TWO_TASKS, cfg.class_names))
    bad = data.full_val.records[-1]  # generated on first use
    (tmp_path / "tiny" / "JPEGImages" / bad.file_name).write_bytes(b"not an image")
    runner = ContinualRunner(tiny_cfg(tmp_path / "tiny"), parse_scenario(TWO_TASKS, cfg.class_names),
                             build_method("naive"), run_dir=tmp_path / "run", progress_bar=False)
    with pytest.raises(ImageError, match=f"{bad.file_name} \\(not a decodable image\\)"):
        runner.run()
    assert not list((tmp_path / "run").glob("task_*"))  # nothing trained
    assert not (tmp_path / "run" / "run.json").exists()  # so a corrected re-run is free to start
