import random

import cv2
import numpy as np
import pytest

from nanodet.data.transform import PIPELINE_KEYS, Pipeline, ShapeTransform
from nanodet.data.transform.warp import get_minimum_dst_shape, get_resize_matrix
from nanodet.util.box_transform import warp_boxes

from fixtures_data import class_colour

NORMALIZE = [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]


def load(data, index):
    g = data.gt[index]
    img = cv2.imread(f"{data.img_dir}/{g['file_name']}")
    return img, g


def colour_mask(img, colour, tol=40):
    """Pixels whose colour is within ``tol`` (per channel) of ``colour``: the object's pixels."""
    return (np.abs(img.astype(np.int32) - np.array(colour)) <= tol).all(axis=2)


def max_scale(matrix):
    """Largest stretch of the linear part: how wide one source pixel becomes in the output."""
    return float(np.linalg.svd(matrix[:2, :2], compute_uv=False).max())


@pytest.mark.parametrize("seed", range(6))
def test_warped_boxes_enclose_the_warped_rectangles_pixels(synthetic_data, seed):
    transform = ShapeTransform(keep_ratio=True, scale=(0.6, 1.4), stretch=((0.8, 1.2), (0.9, 1.1)),
                               rotation=15, translate=0.2, flip=0.5)
    n_classes = len(synthetic_data.class_names)
    random.seed(seed)
    checked = 0
    for index in range(len(synthetic_data.gt)):
        img, g = load(synthetic_data, index)
        meta = transform({"img": img, "gt_bboxes": g["boxes"].copy()}, dst_shape=(320, 320))
        warped, boxes = meta["img"], meta["gt_bboxes"]
        tol = 1.0 + 1.5 * max_scale(meta["warp_matrix"].astype(np.float64))
        for label in np.unique(g["labels"]):
            mask = colour_mask(warped, class_colour(label, n_classes))
            ys, xs = np.nonzero(mask)
            own = boxes[g["labels"] == label]
            # Every pixel of this colour lies in some box of this class.
            inside = np.zeros(len(xs), dtype=bool)
            for x0, y0, x1, y1 in own:
                inside |= (xs >= x0 - tol) & (xs <= x1 + tol) & (ys >= y0 - tol) & (ys <= y1 + tol)
            assert inside.all(), f"seed {seed} image {index}: class {label} pixels outside boxes"
            # A box alone in its neighbourhood and not cut by the border is tight around its
            # pixels (a clipped rotated box need not be: its visible corner may be gone).
            out_h, out_w = warped.shape[:2]
            for i, (x0, y0, x1, y1) in enumerate(own):
                if min(x0, y0) < tol or x1 > out_w - tol or y1 > out_h - tol:
                    continue
                others = np.delete(own, i, axis=0)
                overlap = ((others[:, 0] < x1 + 2 * tol) & (others[:, 2] > x0 - 2 * tol) &
                           (others[:, 1] < y1 + 2 * tol) & (others[:, 3] > y0 - 2 * tol))
                near = (xs >= x0 - tol) & (xs <= x1 + tol) & (ys >= y0 - tol) & (ys <= y1 + tol)
                if overlap.any() or (x1 - x0) < 3 * tol or (y1 - y0) < 3 * tol:
                    continue
                assert near.any()
                found = [xs[near].min(), ys[near].min(), xs[near].max(), ys[near].max()]
                np.testing.assert_allclose(found, [x0, y0, x1, y1], atol=tol)
                checked += 1
    assert checked > 10


def test_keep_ratio_resize_fits_and_centres_the_image():
    # A wide image: width fills 320, height scaled by the same factor.
    assert get_minimum_dst_shape((200, 100), (320, 320)) == (320, 160)
    matrix = get_resize_matrix((200, 100), (320, 160), keep_ratio=True)
    np.testing.assert_allclose(matrix, np.diag([1.6, 1.6, 1.0]))
    # Into a larger canvas the resized image is centred.
    matrix = get_resize_matrix((200, 100), (320, 320), keep_ratio=True)
    corners = np.array([[0, 0, 1], [200, 100, 1]], dtype=float) @ matrix.T
    np.testing.assert_allclose(corners[:, :2], [[0, 80], [320, 240]])
    # ``divisible`` rounds the output up; without keep_ratio each axis scales on its own.
    assert get_minimum_dst_shape((150, 100), (320, 320), divisible=32) == (320, 224)
    np.testing.assert_allclose(get_resize_matrix((200, 100), (320, 320), keep_ratio=False),
                               np.diag([1.6, 3.2, 1.0]))


@pytest.mark.parametrize("keep_ratio", [True, False])
def test_eval_pipeline_only_resizes_and_normalizes(synthetic_data, keep_ratio):
    img, g = load(synthetic_data, 0)
    pipeline = Pipeline({"normalize": NORMALIZE, "flip": 1.0, "brightness": 0.5},
                        keep_ratio=keep_ratio, augment=False)
    meta = pipeline(None, {"img": img.copy(), "gt_bboxes": g["boxes"].copy()}, (320, 320))
    matrix = meta["warp_matrix"].astype(np.float64)
    h, w = meta["img"].shape[:2]
    resized = cv2.warpPerspective(img, matrix, dsize=(w, h)).astype(np.float32)
    mean, std = (np.array(v, dtype=np.float32) for v in NORMALIZE)
    np.testing.assert_allclose(meta["img"], (resized - mean) / std, atol=1e-4)
    assert meta["img"].dtype == np.float32
    if not keep_ratio:
        assert (w, h) == (320, 320)
    np.testing.assert_allclose(meta["gt_bboxes"], warp_boxes(g["boxes"], matrix, w, h))


@pytest.mark.parametrize("seed", range(5))
def test_inverse_warp_maps_boxes_back_to_the_image(synthetic_data, seed):
    # Shrinking about the centre keeps every box in view, so nothing is clipped.
    transform = ShapeTransform(keep_ratio=True, scale=(0.6, 1.0), stretch=((0.9, 1.0), (0.9, 1.0)),
                               flip=0.5)
    random.seed(seed)
    for index in range(4):
        img, g = load(synthetic_data, index)
        meta = transform({"img": img, "gt_bboxes": g["boxes"].copy()}, dst_shape=(320, 320))
        h, w = meta["img"].shape[:2]
        back = warp_boxes(meta["gt_bboxes"], np.linalg.inv(meta["warp_matrix"].astype(np.float64)),
                          g["width"], g["height"])
        np.testing.assert_allclose(back, g["boxes"], atol=1e-2)


def test_flip_mirrors_boxes_about_the_image_centre():
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    box = np.array([[10, 20, 50, 60]], dtype=np.float32)
    meta = ShapeTransform(keep_ratio=False, flip=1.0)({"img": img, "gt_bboxes": box}, (200, 100))
    np.testing.assert_allclose(meta["gt_bboxes"], [[150, 20, 190, 60]], atol=1e-4)


def test_same_seed_gives_the_same_augmentation(synthetic_data, train_pipeline):
    img, g = load(synthetic_data, 1)
    pipeline = Pipeline(train_pipeline, keep_ratio=True)
    outputs = []
    for seed in (3, 3):
        random.seed(seed)
        outputs.append(pipeline(None, {"img": img.copy(), "gt_bboxes": g["boxes"].copy()},
                                (320, 320)))
    np.testing.assert_array_equal(outputs[0]["img"], outputs[1]["img"])
    np.testing.assert_array_equal(outputs[0]["gt_bboxes"], outputs[1]["gt_bboxes"])


def test_pipeline_accepts_upstream_keys_and_rejects_others(train_pipeline):
    assert set(train_pipeline) <= set(PIPELINE_KEYS)
    Pipeline(train_pipeline, keep_ratio=True)
    with pytest.raises(ValueError, match="rotate"):
        Pipeline(dict(train_pipeline, rotate=10), keep_ratio=True)
    with pytest.raises(ValueError, match="normalize"):
        Pipeline({"flip": 0.5}, keep_ratio=True)
