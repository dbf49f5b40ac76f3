"""Shared pytest fixtures: one small synthetic dataset written in every annotation format.

``synthetic_data`` (session scope, read-only: copy it before editing files) holds:
    root          the dataset folder (VOC layout)
    img_dir       root/JPEGImages, the images (PNG)
    class_names   ["red", "green", "blue"]; class k is drawn in ``class_colour(k, 3)``
    gt            ground truth, a list of dicts (see tests/fixtures_data.py)
    voc_xml_dir   root/Annotations (XMLDataset ann_path, folder form)
    voc_image_set root/ImageSets/Main/trainval.txt (XMLDataset ann_path, list form)
    coco_json     root/annotations.json (CocoDataset ann_path)
    yolo_dir      root/labels (YoloDataset ann_path, img_path = img_dir)
"""

import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for ``import fixtures_data`` in any import mode

from fixtures_checkout import added_by_the_suite, checkout_state  # noqa: E402
from fixtures_data import make_detection_images, write_coco, write_voc, write_yolo  # noqa: E402

_CHECKOUT_BEFORE = []


def pytest_sessionstart(session):
    _CHECKOUT_BEFORE.append(checkout_state())


def pytest_sessionfinish(session, exitstatus):
    """The suite fails when it wrote into the checkout (a tool's default save_dir, run folder...)."""
    added = added_by_the_suite(_CHECKOUT_BEFORE[0] if _CHECKOUT_BEFORE else None, checkout_state())
    if added:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the test suite wrote into the checkout (tests must write to temporary folders):", *added[:20]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


SYNTHETIC_CLASSES = ["red", "green", "blue"]
NORMALIZE = [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_det"))
    img_dir = os.path.join(root, "JPEGImages")
    gt = make_detection_images(img_dir, n_images=12, class_names=SYNTHETIC_CLASSES, seed=7,
                               difficult_fraction=0.2)
    voc = write_voc(root, gt, SYNTHETIC_CLASSES)
    return SimpleNamespace(
        root=root, img_dir=img_dir, class_names=list(SYNTHETIC_CLASSES), gt=gt,
        voc_xml_dir=voc["xml_dir"], voc_image_set=voc["image_set"],
        coco_json=write_coco(os.path.join(root, "annotations.json"), gt, SYNTHETIC_CLASSES),
        yolo_dir=write_yolo(os.path.join(root, "labels"), gt),
    )


@pytest.fixture
def eval_pipeline():
    """A pipeline node with only normalisation (upstream's val pipeline)."""
    return {"normalize": NORMALIZE}


@pytest.fixture
def train_pipeline():
    """Upstream NanoDet-Plus' train pipeline (cfg nanodet-plus-m_320)."""
    return {
        "perspective": 0.0, "scale": [0.6, 1.4], "stretch": [[0.8, 1.2], [0.8, 1.2]],
        "rotation": 0, "shear": 0, "translate": 0.2, "flip": 0.5, "brightness": 0.2,
        "contrast": [0.6, 1.4], "saturation": [0.5, 1.2], "normalize": NORMALIZE,
    }
