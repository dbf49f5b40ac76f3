"""The fast evaluation path gives what the reference path gives: images decoded once and
normalised on the device against the CPU pipeline and its collate, NMS for a whole batch against
NMS image by image, flat detections against upstream's ``post_process``."""

import numpy as np
import pytest
import torch

from nanodet.data.dataset import XMLDataset
from nanodet.model.arch import build_model
from nanodet.model.head.nanodet_plus_head import batched_multiclass_nms, multiclass_nms
from nanodet.trainer.builders import build_dataloader
from nanodet.trainer.evaluate import EvalImages, predict_dataset, predict_detections
from nanodet.util import read_config
from fixtures_continual import ROOT


@pytest.fixture(scope="module")
def cfg():
    return read_config(ROOT / "cfg/demo.yml", ["device.workers_per_gpu=0", "device.batchsize_per_gpu=5",
                                               "model.arch.head.num_classes=3",
                                               "class_names=[red, green, blue]"])


@pytest.fixture(scope="module")
def dataset(synthetic_data, cfg):
    # Images of 96-200 x 80-160 pixels, resized with their aspect ratio kept into 128x128: the
    # batches differ in size and are padded.
    return XMLDataset(img_path=synthetic_data.img_dir, ann_path=synthetic_data.voc_xml_dir, input_size=[128, 128],
                      keep_ratio=True, pipeline=dict(cfg.data.val.pipeline), class_names=synthetic_data.class_names,
                      mode="val")


@pytest.fixture(scope="module")
def eager_model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    for conv in model.head.gfl_cls:  # scores around 0.5: hundreds of candidates per image
        torch.nn.init.normal_(conv.bias, 0.0, 1.0)
    forward = model.head.forward

    def without_ties(feats, with_towers=False):
        # Equal scores (a uniform padded area gives many) leave NMS's order to the sort: a fixed
        # random offset per prior and class makes every image's scores distinct.
        preds = forward(feats, with_towers)
        offsets = torch.rand(preds.shape[1:], generator=torch.Generator().manual_seed(preds.shape[1]))
        offsets[:, model.head.num_classes:] = 0
        return preds + offsets

    model.head.forward = without_ties
    return model


def test_cached_batches_are_the_cpu_pipelines_collated_batches(dataset, cfg):
    images = EvalImages(dataset)
    rows = images.rows(dataset)
    for k, batch in enumerate(build_dataloader(dataset, cfg, train=False)):
        batch_rows = rows[k * 5:(k + 1) * 5]
        assert torch.equal(images.batch(batch_rows), batch["img"])
        np.testing.assert_array_equal(images.warp_matrices[batch_rows], np.stack(batch["warp_matrix"]))


def test_batched_nms_keeps_what_nms_per_image_keeps():
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(4, 600, 2, generator=generator) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(4, 600, 2, generator=generator) * 40], -1)
    scores = torch.rand(4, 600, 5, generator=generator) ** 3
    image, dets, labels = batched_multiclass_nms(boxes, scores, 0.05, 0.6, max_num=100)
    assert torch.all(image[1:] >= image[:-1])
    for i in range(4):
        expected_dets, expected_labels = multiclass_nms(boxes[i], scores[i], 0.05, 0.6, max_num=100)
        assert len(expected_dets) == 100  # the cap applies
        torch.testing.assert_close(dets[image == i], expected_dets)
        assert torch.equal(labels[image == i], expected_labels)


def clustered_candidates(images, priors, classes, seed):
    """Boxes in a few tight clusters (long chains of overlaps, as around real objects), random
    scores: the hard case for NMS."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(images, 6, 2, generator=generator) * 200
    member = torch.randint(6, (images, priors), generator=generator)
    xy = centres.gather(1, member[..., None].expand(-1, -1, 2))
    xy = xy + torch.randn(images, priors, 2, generator=generator) * 4
    wh = 20 + torch.rand(images, priors, 2, generator=generator) * 10
    return torch.cat([xy, xy + wh], -1), torch.rand(images, priors, classes, generator=generator) ** 2


@pytest.mark.parametrize("max_num, prefix", [(100, 1024), (100, 8), (20, 8), (-1, 8)])
def test_batched_nms_on_clusters_keeps_what_nms_per_image_keeps(max_num, prefix):
    boxes, scores = clustered_candidates(3, 400, 4, seed=5)
    scores[1] = 0.0  # an image without a single candidate
    image, dets, labels = batched_multiclass_nms(boxes, scores, 0.05, 0.6, max_num=max_num, prefix=prefix)
    for i in range(3):
        expected_dets, expected_labels = multiclass_nms(boxes[i], scores[i], 0.05, 0.6, max_num=max_num)
        assert len(expected_dets) == (0 if i == 1 else max_num if max_num > 0 else len(expected_dets))
        torch.testing.assert_close(dets[image == i], expected_dets)
        assert torch.equal(labels[image == i], expected_labels)


def test_batched_nms_of_no_images_and_no_candidates():
    for images in (0, 2):
        image, dets, labels = batched_multiclass_nms(torch.zeros(images, 10, 4), torch.zeros(images, 10, 3),
                                                     0.05, 0.6, max_num=100)
        assert image.shape == (0,) and dets.shape == (0, 5) and labels.shape == (0,)


def reference_results(model, dataset, cfg):
    """Upstream's way: the CPU pipeline through a DataLoader, post_process image by image."""
    results = {}
    with torch.no_grad():
        for batch in build_dataloader(dataset, cfg, train=False):
            results.update(model.head.post_process(model(batch["img"]), batch))
    return results


def test_fast_predictions_equal_upstreams_post_process(eager_model, dataset, cfg):
    assert_same_results(predict_dataset(eager_model, dataset, cfg), reference_results(eager_model, dataset, cfg))


def assert_same_results(got, expected):
    assert got.keys() == expected.keys()
    total = 0
    for img_id, per_class in expected.items():
        assert got[img_id].keys() == per_class.keys()
        for label, rows in per_class.items():
            np.testing.assert_allclose(np.asarray(got[img_id][label]).reshape(-1, 5),
                                       np.asarray(rows).reshape(-1, 5), rtol=1e-6, atol=1e-4)
            total += len(rows)
    assert total > 10 * len(expected)


def test_a_subset_is_served_from_the_images_of_the_whole_set(eager_model, dataset, cfg):
    images = EvalImages(dataset)
    subset = dataset.subset([1])
    assert 0 < len(subset) < len(dataset)
    from_whole = predict_detections(eager_model, subset, cfg, images=images)
    alone = predict_detections(eager_model, subset, cfg)
    assert set(from_whole.image_ids.tolist()) <= {r.id for r in subset.records}
    np.testing.assert_array_equal(from_whole.boxes, alone.boxes)
    np.testing.assert_array_equal(from_whole.scores, alone.scores)


def test_an_image_outside_the_cached_set_is_refused_by_id(dataset):
    images = EvalImages(dataset.subset([0]))
    missing = next(r.id for r in dataset.records if r.id not in {x.id for x in dataset.subset([0]).records})
    with pytest.raises(ValueError, match=f"image id {missing} is not among the cached evaluation images"):
        images.rows(dataset)


def test_every_batch_the_network_sees_has_the_batch_size_and_blank_fillers_add_nothing(eager_model, dataset, cfg):
    batch_size = cfg.device.batchsize_per_gpu
    assert len(dataset) % batch_size  # a ragged last batch, which upstream runs as it is
    seen = []
    hook = eager_model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        got = predict_dataset(eager_model, dataset, cfg)
    finally:
        hook.remove()
    assert seen == [batch_size] * -(-len(dataset) // batch_size)
    assert_same_results(got, reference_results(eager_model, dataset, cfg))
