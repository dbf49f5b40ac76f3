"""Batch augmentation on the device (run here on the CPU): the same matrices, boxes, pixels and
colours as the CPU pipeline for the same random draws; boxes that stay on their objects; the
decoded-image cache and loader serving batches in the collate's format."""

import random

import cv2
import numpy as np
import pytest
import torch

from nanodet.data.collate import collate_and_pad
from nanodet.data.dataset import CocoDataset
from nanodet.data.gpu_augment import (
    AugmentSampler,
    DecodedImageCache,
    GpuBatchAugment,
    GpuBatchLoader,
    adjust_saturation_bgr,
    resize_matrices,
)
from nanodet.data.transform import Pipeline
from nanodet.data.transform.color import random_brightness, random_contrast, random_saturation
from nanodet.data.transform.warp import get_resize_matrix
from nanodet.model.head import build_head

from fixtures_data import class_colour

NORMALIZE = [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]
FULL_PIPELINE = {
    "perspective": 0.0005, "scale": [0.6, 1.4], "stretch": [[0.8, 1.2], [0.8, 1.2]],
    "rotation": 12, "shear": 4, "translate": 0.2, "flip": 0.5, "brightness": 0.2,
    "contrast": [0.6, 1.4], "saturation": [0.5, 1.2], "normalize": NORMALIZE,
}


def load_all(data):
    return [cv2.imread(f"{data.img_dir}/{g['file_name']}") for g in data.gt]


def denormalize(img):
    """Normalised CHW tensor -> HWC BGR on the 0-255 scale."""
    mean, std = (np.array(v, dtype=np.float32) for v in NORMALIZE)
    return img.permute(1, 2, 0).numpy() * std + mean


@pytest.mark.parametrize("keep_ratio", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_same_draws_give_the_cpu_pipelines_matrix_boxes_and_pixels(synthetic_data, seed, keep_ratio):
    images = load_all(synthetic_data)[:6]
    gts = synthetic_data.gt[:6]
    pipeline = Pipeline(FULL_PIPELINE, keep_ratio=keep_ratio)
    random.seed(seed)
    cpu = [pipeline(None, {"img": img.copy(), "gt_bboxes": g["boxes"].copy()}, (160, 128))
           for img, g in zip(images, gts)]

    augment = GpuBatchAugment(FULL_PIPELINE, (160, 128), keep_ratio=keep_ratio, device="cpu")
    random.seed(seed)
    params = augment.sampler.sample_like_cpu(len(images))
    batch = augment(images, [g["boxes"] for g in gts], [g["labels"] for g in gts], params=params)

    assert batch["img"].shape == (6, 3, 128, 160) and batch["img"].dtype == torch.float32
    for i, meta in enumerate(cpu):
        np.testing.assert_allclose(batch["warp_matrix"][i], meta["warp_matrix"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch["gt_bboxes"][i], meta["gt_bboxes"], atol=1e-3)
        h, w = meta["img"].shape[:2]
        ours = batch["img"][i].permute(1, 2, 0).numpy()
        diff = np.abs(ours[:h, :w] - meta["img"])
        # OpenCV interpolates in 1/32-pixel fixed point: now and then a grey level (0.0175) apart.
        assert diff.mean() < 1e-3 and np.quantile(diff, 0.999) < 0.02, (i, diff.mean(), diff.max())
        assert (ours[h:] == 0).all() and (ours[:, w:] == 0).all()  # the collate's zero padding


def test_batched_matrices_equal_warp_py_helpers():
    raw = torch.tensor([[200.0, 100.0], [150.0, 150.0], [97.0, 211.0]], dtype=torch.float64)
    dst = torch.tensor([[320.0, 160.0], [320.0, 320.0], [160.0, 320.0]], dtype=torch.float64)
    for keep_ratio in (True, False):
        ours = resize_matrices(raw[:, 0], raw[:, 1], dst[:, 0], dst[:, 1], keep_ratio)
        for i in range(3):
            expected = get_resize_matrix(tuple(raw[i].tolist()), tuple(dst[i].tolist()), keep_ratio)
            np.testing.assert_allclose(ours[i].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_colour_terms_equal_color_py_on_the_same_parameters(monkeypatch):
    rng = np.random.default_rng(0)
    # Values outside [0, 1] too: brightness and contrast come before saturation, unclipped.
    img = rng.uniform(-0.3, 1.4, (2, 24, 32, 3)).astype(np.float32)
    as_tensor = torch.from_numpy(img).permute(0, 3, 1, 2)
    for factor in (0.5, 0.93, 1.2):
        expected = np.stack([random_saturation(x, factor, factor) for x in img])
        ours = adjust_saturation_bgr(as_tensor, torch.tensor(factor, dtype=torch.float32))
        np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    # Brightness and contrast inside GpuBatchAugment's colour step, against color.py's.
    augment = GpuBatchAugment({"normalize": [[0, 0, 0], [255, 255, 255]]}, (32, 24), device="cpu")
    colour = torch.tensor([[0.15, 1.3, 0.8, 1.0], [-0.1, 0.7, 1.0, 0.0]])
    ours = augment._colour(torch.from_numpy(img * 255).permute(0, 3, 1, 2), colour)
    for i, (b, c, s, on) in enumerate(colour.tolist()):
        # color.py's functions with random.uniform returning the drawn value.
        monkeypatch.setattr(random, "uniform", lambda low, high: b)
        expected = random_brightness(img[i], 0.2)
        monkeypatch.setattr(random, "uniform", lambda low, high: c)
        expected = random_contrast(expected, 0.6, 1.4)
        if on:
            monkeypatch.setattr(random, "uniform", lambda low, high: s)
            expected = random_saturation(expected, 0.5, 1.2)
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def colour_mask(img, colour, tol=40):
    return (np.abs(img - np.array(colour, dtype=np.float32)) <= tol).all(axis=2)


def max_scale(matrix):
    return float(np.linalg.svd(np.asarray(matrix, dtype=np.float64)[:2, :2], compute_uv=False).max())


def check_boxes_on_objects(img, boxes, labels, matrix, num_classes, extra_tol=0.0):
    """Every pixel of a class colour lies in a box of that class; returns how many boxes were
    found tight around their pixels (isolated, not clipped)."""
    tol = 1.0 + 1.5 * max_scale(matrix) + extra_tol
    tight = 0
    out_h, out_w = img.shape[:2]
    for label in np.unique(labels):
        ys, xs = np.nonzero(colour_mask(img, class_colour(label, num_classes)))
        own = boxes[labels == label]
        inside = np.zeros(len(xs), dtype=bool)
        for x0, y0, x1, y1 in own:
            inside |= (xs >= x0 - tol) & (xs <= x1 + tol) & (ys >= y0 - tol) & (ys <= y1 + tol)
        assert inside.all(), f"class {label}: {int((~inside).sum())} pixels outside its boxes"
        for i, (x0, y0, x1, y1) in enumerate(own):
            others = np.delete(boxes, np.flatnonzero((labels == label))[i], axis=0)
            clipped = min(x0, y0) < tol or x1 > out_w - tol or y1 > out_h - tol
            near_others = ((others[:, 0] < x1 + 2 * tol) & (others[:, 2] > x0 - 2 * tol) &
                           (others[:, 1] < y1 + 2 * tol) & (others[:, 3] > y0 - 2 * tol)).any()
            if clipped or near_others or min(x1 - x0, y1 - y0) < 3 * tol:
                continue
            near = (xs >= x0 - tol) & (xs <= x1 + tol) & (ys >= y0 - tol) & (ys <= y1 + tol)
            found = [xs[near].min(), ys[near].min(), xs[near].max(), ys[near].max()]
            np.testing.assert_allclose(found, [x0, y0, x1, y1], atol=tol)
            tight += 1
    return tight


@pytest.mark.parametrize("seed", range(3))
def test_boxes_stay_on_their_coloured_rectangles(synthetic_data, seed):
    shape_only = {k: v for k, v in FULL_PIPELINE.items()
                  if k not in ("brightness", "contrast", "saturation", "perspective")}
    augment = GpuBatchAugment(shape_only, (320, 320), keep_ratio=True, device="cpu")
    images, gts = load_all(synthetic_data), synthetic_data.gt
    batch = augment(images, [g["boxes"] for g in gts], [g["labels"] for g in gts],
                    generator=torch.Generator().manual_seed(seed))
    tight = 0
    for i, g in enumerate(gts):
        tight += check_boxes_on_objects(denormalize(batch["img"][i]), batch["gt_bboxes"][i],
                                        g["labels"], batch["warp_matrix"][i], len(synthetic_data.class_names))
    assert tight > 5


def test_torch_draws_cover_the_configured_ranges():
    sampler = AugmentSampler(FULL_PIPELINE)
    params = sampler.sample(4000, torch.Generator().manual_seed(0))
    assert params.scale.min() >= 0.6 and params.scale.max() <= 1.4
    assert params.rotation.abs().max() <= 12 and params.shear_x.abs().max() <= 4
    assert 0.45 < params.flip.double().mean() < 0.55
    assert 0.45 < (params.brightness != 0).double().mean() < 0.55
    assert params.brightness.abs().max() <= 0.2
    assert 0.45 < params.saturation_on.double().mean() < 0.55
    assert ((params.translate_x >= 0.3) & (params.translate_x <= 0.7)).all()
    identity = AugmentSampler(FULL_PIPELINE, augment=False).sample(8)
    assert (identity.scale == 1).all() and not identity.flip.any() and (identity.contrast == 1).all()


@pytest.fixture
def coco_train(synthetic_data):
    """COCO flavour: its difficult boxes become ignore regions, as in training upstream."""
    return CocoDataset(img_path=synthetic_data.img_dir, ann_path=synthetic_data.coco_json,
                       input_size=[96, 80], pipeline=FULL_PIPELINE, keep_ratio=True, mode="train",
                       class_names=synthetic_data.class_names)


def test_cache_and_loader_serve_batches_in_the_collates_format(coco_train, synthetic_data):
    cache = DecodedImageCache(coco_train, workers=2)
    assert cache.images.shape == (12, 80, 96, 3) and cache.images.dtype == torch.uint8
    assert (cache.sizes[:, 0] <= 96).all() and (cache.sizes[:, 1] <= 80).all()
    assert cache.has_ignore  # the fixture flags a fifth of the boxes difficult

    shape_only = {k: v for k, v in FULL_PIPELINE.items() if k not in ("brightness", "contrast", "saturation")}
    augment = GpuBatchAugment(shape_only, coco_train.input_size, keep_ratio=True, device="cpu")
    loader = GpuBatchLoader(cache, augment, batch_size=5, shuffle=True, drop_last=False, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    ids = torch.cat([b["img_info"]["id"] for b in batches]).tolist()
    assert sorted(ids) == sorted(r.id for r in coco_train.records)  # every image once an epoch

    shards = [GpuBatchLoader(cache, augment, batch_size=2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    shard_ids = [torch.cat([b["img_info"]["id"] for b in shard]).tolist() for shard in shards]
    assert len(shard_ids[0]) == len(shard_ids[1]) == 6 and not set(shard_ids[0]) & set(shard_ids[1])
    # An image count that does not divide: every rank still gets the same number of batches.
    odd = [GpuBatchLoader(cache, augment, batch_size=2, seed=1, rank=r, world_size=5) for r in range(5)]
    assert [len(list(shard)) for shard in odd] == [len(shard) for shard in odd] == [1] * 5

    # A batch sampler (replay's half-current, half-buffer batches) chooses the images exactly.
    chosen = [[0, 1, 11], [5, 5, 2]]
    sampled = list(GpuBatchLoader(cache, augment, batch_size=3, seed=1, batch_sampler=chosen))
    records = coco_train.records
    assert [b["img_info"]["id"].tolist() for b in sampled] == [[records[i].id for i in rows] for rows in chosen]

    cpu_batch = collate_and_pad([coco_train[i] for i in range(5)])
    assert set(cpu_batch) <= set(batches[0])
    assert batches[0]["img"].shape[2:] == cpu_batch["img"].shape[2:] == (96, 96)
    by_id = {r.id: r for r in coco_train.records}
    tight = 0
    for batch in batches:
        for i, image_id in enumerate(batch["img_info"]["id"].tolist()):
            record = by_id[image_id]
            kept = ~record.difficult
            assert len(batch["gt_bboxes"][i]) == kept.sum()
            assert len(batch["gt_bboxes_ignore"][i]) == (~kept).sum()
            # The cache shrank the image about 2x: allow a cached pixel of slack.
            tight += check_boxes_on_objects(
                denormalize(batch["img"][i]), np.concatenate([batch["gt_bboxes"][i], batch["gt_bboxes_ignore"][i]]),
                np.concatenate([record.labels[kept], record.labels[~kept]]), batch["warp_matrix"][i],
                len(synthetic_data.class_names), extra_tol=2.0)
    assert tight > 3


def test_head_loss_reads_the_augmented_batchs_padded_gt(synthetic_data):
    augment = GpuBatchAugment(FULL_PIPELINE, (64, 64), keep_ratio=False, device="cpu")
    gts = synthetic_data.gt[:4]
    batch = augment(load_all(synthetic_data)[:4], [g["boxes"] for g in gts], [g["labels"] for g in gts],
                    generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    head = build_head(dict(name="NanoDetPlusHead", num_classes=3, input_channel=8, feat_channels=8,
                           stacked_convs=1, kernel_size=3, strides=[8, 16, 32], reg_max=7,
                           loss={"loss_qfl": {"beta": 2.0, "loss_weight": 1.0},
                                 "loss_dfl": {"loss_weight": 0.25}, "loss_bbox": {"loss_weight": 2.0}}))
    preds = torch.randn(4, 64 + 16 + 4, 3 + 32, generator=torch.Generator().manual_seed(1))
    as_lists = {k: batch[k] for k in ("img", "gt_bboxes", "gt_labels")}
    loss, states = head.loss(preds, batch)
    expected, expected_states = head.loss(preds, as_lists)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert states["loss_bbox"].item() > 0


def test_the_loader_follows_gpu_augment_on_a_cpu(coco_train):
    # true falls back to the CPU pipeline on a CPU (configs stay portable); always takes the batch
    # augmentation there too, for comparing both paths' training on a CPU.
    from nanodet.trainer.builders import build_train_loader
    from nanodet.util.config import read_config

    for value, expected in (("false", torch.utils.data.DataLoader), ("true", torch.utils.data.DataLoader),
                            ("always", GpuBatchLoader)):
        cfg = read_config("cfg/demo.yml", [f"device.gpu_augment={value}", "device.workers_per_gpu=0"])
        assert isinstance(build_train_loader(coco_train, cfg, torch.device("cpu"), batch_size=4), expected)


def test_a_dataset_and_its_subsets_decode_each_image_once(coco_train, monkeypatch):
    reads = []
    read_image = type(coco_train).read_image
    monkeypatch.setattr(type(coco_train), "read_image", lambda self, record: reads.append(record.id) or
                        read_image(self, record))
    first, second = coco_train.subset([0]), coco_train.subset([1, 2])
    caches = [DecodedImageCache(part, workers=2) for part in (first, second, coco_train)]
    assert sorted(reads) == sorted(r.id for r in coco_train.records)  # overlapping subsets: no image twice
    whole = caches[2]
    row = {r.id: i for i, r in enumerate(coco_train.records)}
    for part, cache in zip((first, second), caches):
        rows = [row[r.id] for r in part.records]
        assert torch.equal(cache.images, whole.images[rows]) and torch.equal(cache.sizes, whole.sizes[rows])
        own = [len(b) + len(i) for b, i in zip(cache.gt_bboxes, cache.gt_bboxes_ignore)]
        assert own == [len(r.boxes) for r in part.records]  # the subset's own boxes
    coco_train.shared_cache.clear()  # decoded afresh: the same pixels
    assert torch.equal(DecodedImageCache(coco_train, workers=2).images, whole.images)
