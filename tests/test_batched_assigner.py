"""The batched Dynamic Soft Label Assigner and the head's batched loss agree with the per-image
reference (``DynamicSoftLabelAssigner`` and ``batched_assign=False``) on random batches: varied GT
counts (images without GT included), overlapping GTs that claim the same priors, tiny boxes that
hold no prior centre, and ignore regions."""

import numpy as np
import pytest
import torch

from nanodet.model.head import build_head
from nanodet.model.head.assigner import DynamicSoftLabelAssigner
from nanodet.model.head.assigner.batched_dsl_assigner import BatchedDynamicSoftLabelAssigner
from nanodet.model.head.assigner.dsl_assigner import center_in_gt_mask, soft_label_cls_cost
from nanodet.util.gt_batch import PADDED_GT_KEYS, pad_gt_batch, pad_on_device
from nanodet.model.loss import bbox_overlaps

SIZE = 128
STRIDES = [8, 16, 32]
NUM_CLASSES = 5
LOSS_CFG = {
    "loss_qfl": {"name": "QualityFocalLoss", "use_sigmoid": True, "beta": 2.0, "loss_weight": 1.0},
    "loss_dfl": {"name": "DistributionFocalLoss", "loss_weight": 0.25},
    "loss_bbox": {"name": "GIoULoss", "loss_weight": 2.0},
}


def make_head(batched_assign=True, **assigner):
    torch.manual_seed(0)
    return build_head(dict(name="NanoDetPlusHead", num_classes=NUM_CLASSES, input_channel=8,
                           feat_channels=8, stacked_convs=1, kernel_size=3, strides=STRIDES,
                           reg_max=7, loss=LOSS_CFG, batched_assign=batched_assign,
                           assigner_cfg=dict(topk=13, **assigner)))


def random_gt(rng, num_gts):
    """GT boxes of one image: a mix of ordinary boxes, near-duplicates of them (conflicts) and
    tiny boxes that may hold no prior centre."""
    boxes = []
    for _ in range(num_gts):
        kind = rng.random()
        if kind < 0.25 and boxes:  # a jittered copy of an earlier box: both claim its priors
            boxes.append(boxes[rng.integers(len(boxes))] + rng.normal(0, 3, 4))
        elif kind < 0.4:  # tiny: between prior centres
            x, y = rng.uniform(1, SIZE - 4, 2)
            boxes.append(np.array([x, y, x + rng.uniform(0.5, 3), y + rng.uniform(0.5, 3)]))
        else:
            center, size = rng.uniform(0, SIZE, 2), rng.uniform(8, 70, 2)
            boxes.append(np.concatenate([center - size / 2, center + size / 2]))
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return boxes, rng.integers(0, NUM_CLASSES, len(boxes))


def random_batch(seed, batch_size=6):
    """Per-image GT lists (counts 0..9, at least one image without GT) and predictions whose boxes
    lie near the GT, so that IoUs, dynamic k's and conflicts are realistic."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 10, batch_size)
    counts[seed % batch_size] = 0
    gts = [random_gt(rng, int(n)) for n in counts]
    head = make_head()
    priors = head.get_center_priors(SIZE, SIZE, torch.device("cpu"))
    num_priors = priors.shape[0]
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, num_priors, NUM_CLASSES, generator=g) * 2 - 2
    distances = torch.rand(batch_size, num_priors, 4, generator=g) * 3 * priors[:, 2:3] + 1
    decoded = torch.cat([priors[:, :2] - distances[..., :2], priors[:, :2] + distances[..., 2:]], -1)
    return gts, priors, logits, decoded


def padded(gts):
    meta = {"gt_bboxes": [b for b, _ in gts], "gt_labels": [labels for _, labels in gts]}
    return pad_gt_batch(meta, torch.device("cpu"))


def conflicts_before_resolution(logits, priors, decoded, gt_bboxes, gt_labels):
    """How many priors the per-image rule gives to more than one GT before the conflict step."""
    assigner = DynamicSoftLabelAssigner()
    candidates = center_in_gt_mask(priors, gt_bboxes).any(dim=1)
    ious = bbox_overlaps(decoded, gt_bboxes)
    cost = soft_label_cls_cost(logits, gt_labels, ious) - 3.0 * torch.log(ious + 1e-7)
    k = assigner.topk
    dynamic_ks = ious.masked_fill(~candidates[:, None], 0).topk(k, dim=0).values.sum(0).int().clamp(min=1)
    cheapest = cost.masked_fill(~candidates[:, None], 1e8).topk(k, dim=0, largest=False).indices
    matching = torch.zeros_like(cost, dtype=torch.bool)
    matching.scatter_(0, cheapest, torch.arange(k)[:, None] < dynamic_ks[None])
    return int(((matching & candidates[:, None]).sum(1) > 1).sum())


@pytest.mark.parametrize("seed", range(8))
def test_batched_assignment_equals_the_per_image_reference(seed):
    gts, priors, logits, decoded = random_batch(seed)
    gt = padded(gts)
    result = BatchedDynamicSoftLabelAssigner().assign(logits, priors, decoded, gt.bboxes, gt.labels, gt.valid)
    reference = DynamicSoftLabelAssigner()
    for i, (boxes, labels) in enumerate(gts):
        ref = reference.assign(logits[i], priors, decoded[i], torch.from_numpy(boxes), torch.from_numpy(labels))
        assert torch.equal(result.gt_inds[i], ref.gt_inds), f"image {i} ({len(boxes)} GT)"
        assert torch.equal(result.labels[i], ref.labels)
        assert torch.equal(result.max_overlaps[i], ref.max_overlaps)
        assert torch.equal(result.positive[i], ref.gt_inds > 0)


def test_random_cases_exercise_conflicts_empty_images_and_boxes_without_candidates():
    """The cases above are not vacuous: they hold priors claimed by several GTs, images without
    GT and GTs that contain no prior centre, and the batch still has positives."""
    conflicts = empty_images = no_candidate_gts = positives = 0
    for seed in range(8):
        gts, priors, logits, decoded = random_batch(seed)
        for i, (boxes, labels) in enumerate(gts):
            if len(boxes) == 0:
                empty_images += 1
                continue
            boxes_t = torch.from_numpy(boxes)
            no_candidate_gts += int((~center_in_gt_mask(priors, boxes_t).any(0)).sum())
            conflicts += conflicts_before_resolution(logits[i], priors, decoded[i], boxes_t,
                                                     torch.from_numpy(labels))
        gt = padded(gts)
        positives += int(BatchedDynamicSoftLabelAssigner().assign(
            logits, priors, decoded, gt.bboxes, gt.labels, gt.valid).positive.sum())
    assert conflicts >= 10 and empty_images >= 8 and no_candidate_gts >= 5 and positives > 100


def test_ignore_regions_match_the_per_image_reference():
    gts, priors, logits, decoded = random_batch(3)
    rng = np.random.default_rng(0)
    ignores = [random_gt(rng, int(n))[0] for n in rng.integers(0, 3, len(gts))]
    meta = {"gt_bboxes": [b for b, _ in gts], "gt_labels": [labels for _, labels in gts], "gt_bboxes_ignore": ignores}
    gt = pad_gt_batch(meta, torch.device("cpu"), with_ignore=True)
    result = BatchedDynamicSoftLabelAssigner(ignore_iof_thr=0.3).assign(
        logits, priors, decoded, gt.bboxes, gt.labels, gt.valid, gt.ignore, gt.ignore_valid)
    reference = DynamicSoftLabelAssigner(ignore_iof_thr=0.3)
    ignored = 0
    for i, ((boxes, labels), ignore) in enumerate(zip(gts, ignores)):
        ref = reference.assign(logits[i], priors, decoded[i], torch.from_numpy(boxes),
                               torch.from_numpy(labels), torch.from_numpy(ignore))
        assert torch.equal(result.gt_inds[i], ref.gt_inds)
        ignored += int((ref.gt_inds < 0).sum())
    assert ignored > 0


def test_a_batch_without_any_gt_has_no_positive():
    _, priors, logits, decoded = random_batch(0, batch_size=2)
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))] * 2
    gt = padded(empty)
    assert gt.bboxes.shape == (2, 1, 4) and not gt.valid.any()  # padded to one slot
    result = BatchedDynamicSoftLabelAssigner().assign(logits, priors, decoded, gt.bboxes, gt.labels, gt.valid)
    assert not result.positive.any() and (result.labels == -1).all()
    assert (result.max_overlaps == 0).all()


def test_padding_packs_every_image_gt_in_order():
    gts = [random_gt(np.random.default_rng(s), n) for s, n in ((0, 3), (1, 0), (2, 5))]
    gt = padded(gts)
    assert gt.bboxes.shape == (3, 5, 4) and gt.valid.sum(1).tolist() == [3, 0, 5]
    for i, (boxes, labels) in enumerate(gts):
        assert torch.equal(gt.bboxes[i, :len(boxes)], torch.from_numpy(boxes))
        assert gt.labels[i, :len(labels)].tolist() == labels.tolist()
        assert (gt.bboxes[i, len(boxes):] == 0).all()


# ------------------------------------------------------------------------------- losses
def head_batch(seed, batch_size=5):
    gts, _, _, _ = random_batch(seed, batch_size)
    g = torch.Generator().manual_seed(seed)
    num_priors = make_head().get_center_priors(SIZE, SIZE, torch.device("cpu")).shape[0]
    preds = torch.randn(batch_size, num_priors, NUM_CLASSES + 32, generator=g)
    preds[..., :NUM_CLASSES] -= 2
    meta = {"img": torch.zeros(batch_size, 3, SIZE, SIZE), "gt_bboxes": [b for b, _ in gts],
            "gt_labels": [labels for _, labels in gts]}
    return preds, meta


def assert_same_losses(a, b):
    (loss_a, states_a), (loss_b, states_b) = a, b
    assert set(states_a) == set(states_b)
    for key in states_a:
        assert states_b[key].item() == pytest.approx(states_a[key].item(), rel=1e-5, abs=1e-7), key
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_batched_loss_equals_the_per_image_loss(seed):
    preds, meta = head_batch(seed)
    per_image_preds = preds.clone().requires_grad_()
    batched_preds = preds.clone().requires_grad_()
    reference = make_head(batched_assign=False).loss(per_image_preds, meta)
    batched = make_head(batched_assign=True).loss(batched_preds, meta)
    assert_same_losses(reference, batched)
    reference[0].backward()
    batched[0].backward()
    assert torch.allclose(batched_preds.grad, per_image_preds.grad, rtol=1e-5, atol=1e-9)


def test_batched_targets_equal_the_per_image_targets():
    preds, meta = head_batch(1)
    head = make_head()
    priors = head.get_center_priors(SIZE, SIZE, torch.device("cpu"))
    cls_preds, reg_preds = head.split_preds(preds)
    decoded = head.decode(priors, reg_preds)
    for ref, new in zip(head.target_assign(cls_preds, priors, decoded, meta),
                        head.target_assign_batched(cls_preds, priors, decoded, meta)):
        assert torch.equal(ref, new)


def test_aux_predictions_drive_the_batched_assignment_too():
    preds, meta = head_batch(2)
    aux = preds + 0.5 * torch.randn_like(preds)
    assert_same_losses(make_head(batched_assign=False).loss(preds, meta, aux_preds=aux),
                       make_head(batched_assign=True).loss(preds, meta, aux_preds=aux))


def test_loss_reads_gt_already_padded_on_the_device():
    preds, meta = head_batch(3)
    gt = pad_gt_batch(meta, torch.device("cpu"))
    padded_meta = {"img": meta["img"], **dict(zip(PADDED_GT_KEYS, (gt.bboxes, gt.labels, gt.valid)))}
    head = make_head()
    assert_same_losses(head.loss(preds, meta), head.loss(preds, padded_meta))


def test_gt_given_as_tensors_pads_the_same():
    gts, _, _, _ = random_batch(4)
    as_numpy = padded(gts)
    as_tensors = pad_gt_batch({"gt_bboxes": [torch.from_numpy(b) for b, _ in gts],
                               "gt_labels": [torch.from_numpy(labels) for _, labels in gts]}, torch.device("cpu"))
    # Tensors already on an accelerator are padded there; the same result.
    on_device = pad_on_device([torch.from_numpy(b) for b, _ in gts],
                               [torch.from_numpy(labels) for _, labels in gts], None, torch.device("cpu"))
    for a, b, c in zip(as_numpy[:3], as_tensors[:3], on_device[:3]):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_batched_assign_is_a_config_key_and_defaults_on():
    from nanodet.util import read_config

    shipped = read_config("cfg/synthetic.yml").model.arch.head
    assert "batched_assign" not in shipped and build_head(shipped).batched_assign is True  # the default
    off = read_config("cfg/synthetic.yml", ["model.arch.head.batched_assign=false"]).model.arch.head
    assert build_head(off).batched_assign is False
