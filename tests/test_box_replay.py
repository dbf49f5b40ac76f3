"""Box replay: a bank of old-class crops, pasted into new-task images and into their ground truth."""

import json

import numpy as np
import pytest
import torch

from fixtures_continual import tiny_runner
from nanodet.continual import build_method
from nanodet.continual.methods.box_replay import MAX_COVERAGE, BoxBank, BoxReplay, paste_boxes
from nanodet.continual.report import run_label


def solid_crops(*values):
    return torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in values])


def batch_of(num_images, height=64, width=96, box=(0.0, 0.0, 30.0, 30.0)):
    return {"img": torch.zeros(num_images, 3, height, width),
            "gt_bboxes": [np.array([box], np.float32) for _ in range(num_images)],
            "gt_labels": [np.array([1]) for _ in range(num_images)]}


def test_pasted_crops_are_inside_the_image_and_in_its_ground_truth():
    batch = batch_of(4)
    crops, labels = solid_crops(200, 100), torch.tensor([5, 6])
    mean, std = torch.full((3,), 50.0), torch.full((3,), 2.0)
    out = paste_boxes(batch, crops, labels, torch.tensor([[0.2, 0.25], [0.3, 0.3]]), 2, mean, std,
                      torch.Generator().manual_seed(0))
    assert torch.equal(batch["img"], torch.zeros(4, 3, 64, 96))  # the input batch is left as it was
    boxes, valid, gt_labels = out["gt_bboxes_padded"], out["gt_valid"], out["gt_labels_padded"]
    assert boxes.shape == (4, 3, 4) and valid.all()  # one own box, then two pasted ones
    assert torch.equal(boxes[:, 0], torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 4))
    pasted = boxes[:, 1:]
    assert (pasted[..., :2] >= 0).all() and (pasted[..., 2] <= 96).all() and (pasted[..., 3] <= 64).all()
    painted = torch.zeros(4, 64, 96, dtype=torch.bool)
    for b in range(4):
        for (x0, y0, x1, y1), label in zip(pasted[b].tolist(), gt_labels[b, 1:].tolist()):
            value = {5: (200 - 50) / 2, 6: (100 - 50) / 2}[label]  # normalized as the images were
            inner = out["img"][b, :, int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
            assert inner.numel() and torch.allclose(inner, torch.tensor(value))
            painted[b, int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            covered = max(0.0, min(x1, 30) - max(x0, 0)) * max(0.0, min(y1, 30) - max(y0, 0)) / 900
            assert covered <= MAX_COVERAGE  # the image's own box stays visible
        assert (out["img"][b, :, ~painted[b]] == 0).all()  # nothing outside a paste changed
    assert [len(b) for b in out["gt_bboxes"]] == [3] * 4  # the host lists carry them too
    assert np.allclose(out["gt_bboxes"][2][1:], pasted[2].numpy())
    assert [list(lab) for lab in out["gt_labels"]] == gt_labels.tolist()


def test_no_crop_is_pasted_where_it_would_hide_the_images_boxes():
    # Boxes tiling the whole 96x64 canvas (4 x 3 cells of 24 x 21.3); a crop at least 0.45 of the
    # canvas a side (relative size 0.6 times the smallest scale, 0.75) spans at least 21.6 x 14.4
    # pixels of some cell wherever it goes: 61% of that cell, over MAX_COVERAGE.
    cells = np.array([[x, y, x + 24, y + 64 / 3] for x in range(0, 96, 24) for y in (0, 64 / 3, 128 / 3)],
                     np.float32)
    batch = {"img": torch.zeros(3, 3, 64, 96), "gt_bboxes": [cells] * 3, "gt_labels": [np.ones(12, np.int64)] * 3}
    out = paste_boxes(batch, solid_crops(200), torch.tensor([5]), torch.tensor([[0.6, 0.6]]), 2,
                      torch.zeros(3), torch.ones(3), torch.Generator().manual_seed(1))
    assert MAX_COVERAGE < 0.61 and not out["gt_valid"][:, 12:].any()
    assert torch.equal(out["img"], batch["img"]) and all(len(b) == 12 for b in out["gt_bboxes"])


def test_the_bank_gives_every_class_an_equal_share():
    bank = BoxBank(side=4)
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3)
    bank.add(np.zeros((len(labels), 3, 4, 4), np.uint8), labels, np.full((len(labels), 2), 0.1), task=0)
    bank.balance(30, np.random.default_rng(0))
    # class 2 has 3 crops, under its share of 10: the two others split the 27 left (13, then 14)
    assert dict(zip(*np.unique(bank.labels, return_counts=True))) == {0: 14, 1: 13, 2: 3}
    assert bank.nbytes() == 30 * 3 * 16 + 30 * 8 + 30 * 2 * 4


def test_the_bank_round_trips_and_a_mismatched_file_is_refused(tmp_path):
    bank = BoxBank(side=4)
    bank.add(np.arange(2 * 48, dtype=np.uint8).reshape(2, 3, 4, 4), np.array([3, 4]), np.array([[0.1, 0.2]] * 2), 1)
    bank.save(tmp_path)
    loaded = BoxBank.load(tmp_path)
    assert np.array_equal(loaded.crops, bank.crops) and list(loaded.labels) == [3, 4] and list(loaded.tasks) == [1, 1]
    (tmp_path / "box_bank.json").write_text(json.dumps({"side": 5, "boxes": 2}))
    with pytest.raises(ValueError, match="box_bank.npz"):
        BoxBank.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="box-replay bank"):
        BoxBank.load(tmp_path / "missing")


def test_box_replay_is_an_optional_part_of_any_method():
    method = build_method("ld", box_replay=100, box_replay_side=32)
    part = method.part(BoxReplay)
    assert (part.capacity, part.side, part.per_image) == (100, 32, 2)
    assert method.describe()["box_replay"] == 100 and method.describe()["box_replay_side"] == 32
    assert "box_replay_side" not in build_method("ld").describe()
    with pytest.raises(ValueError, match="--box-replay must be positive"):
        build_method("naive", box_replay=0)


def test_a_run_with_box_replay_stores_and_pastes_old_class_crops(tmp_path, monkeypatch):
    from nanodet.continual.methods import box_replay

    pasted_into = []

    def counting_paste(batch, *args, **kwargs):
        pasted_into.append(batch["img"].shape[0])
        return paste_boxes(batch, *args, **kwargs)

    monkeypatch.setattr(box_replay, "paste_boxes", counting_paste)
    run_dir = tmp_path / "run"
    results = tiny_runner(tmp_path / "tiny_synthetic", run_dir, method="naive", box_replay=40, box_replay_side=16).run()
    assert results["finished"]
    bank = BoxBank.load(run_dir / "task_0")
    assert 0 < len(bank) <= 40 and set(bank.labels.tolist()) <= set(range(10))  # task 0's classes only
    after_task_1 = BoxBank.load(run_dir / "task_1")
    assert set(after_task_1.labels.tolist()) & set(range(10, 20))  # task 1's classes joined
    assert results["per_task"][0]["buffer_bytes"] == bank.nbytes()
    assert results["per_task"][1]["buffer_bytes"] == after_task_1.nbytes()
    assert pasted_into  # task 1's batches, and only those: task 0 has no bank to paste from
    assert run_label(results) == "naive+box replay 40"


def test_a_box_replay_run_pastes_inside_the_static_step(tmp_path, monkeypatch):
    """On the captured step's path the paste runs on its fixed tensors (padded ground truth, no
    host lists), as a CUDA graph would replay it; on the CPU the same static step runs eagerly."""
    from fixtures_continual import TWO_TASKS, tiny_cfg
    from nanodet.continual import ContinualRunner, parse_scenario
    from nanodet.continual.methods import box_replay
    from nanodet.trainer.captured_step import CapturedTrainingStep

    pasted, static_steps = [], []

    def recording_paste(batch, *args, **kwargs):
        pasted.append(sorted(batch))
        return paste_boxes(batch, *args, **kwargs)

    original_step = CapturedTrainingStep.__call__

    def counted_step(self, batch):
        static_steps.append(batch["img"].shape[0])
        return original_step(self, batch)

    monkeypatch.setattr(box_replay, "paste_boxes", recording_paste)
    monkeypatch.setattr(CapturedTrainingStep, "__call__", counted_step)
    assert build_method("ld", box_replay=40).step_capturable()
    cfg = tiny_cfg(tmp_path / "data", 1, extra=["device.gpu_augment=always", "device.cuda_graph=always"])
    method = build_method("ld", box_replay=40, box_replay_side=16)
    results = ContinualRunner(cfg, parse_scenario(TWO_TASKS, cfg.class_names), method, run_dir=tmp_path / "run",
                              seed=7, progress_bar=False).run()
    assert results["finished"] and static_steps and pasted
    assert all(keys == ["gt_bboxes_padded", "gt_labels_padded", "gt_valid", "img"] for keys in pasted)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_paste_replays_in_a_cuda_graph_with_new_random_draws():
    device = torch.device("cuda")
    crops, labels = solid_crops(200, 100).to(device), torch.tensor([5, 6], device=device)
    sizes = torch.tensor([[0.2, 0.25], [0.3, 0.3]], device=device)
    mean, std = torch.full((3,), 50.0, device=device), torch.full((3,), 2.0, device=device)
    static = {"img": torch.zeros(8, 3, 64, 96, device=device),
              "gt_bboxes_padded": torch.tensor([[[0.0, 0.0, 30.0, 30.0]]] * 8, device=device),
              "gt_labels_padded": torch.ones(8, 1, dtype=torch.long, device=device),
              "gt_valid": torch.ones(8, 1, dtype=torch.bool, device=device)}
    paste_boxes(static, crops, labels, sizes, 2, mean, std)  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = paste_boxes(static, crops, labels, sizes, 2, mean, std)
    draws = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        boxes, gt_labels = out["gt_bboxes_padded"][:, 1:].cpu(), out["gt_labels_padded"][:, 1:].cpu()
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= 96).all() and (boxes[..., 3] <= 64).all()
        img = out["img"].cpu()
        for b in range(8):  # the last paste lies on top: its box shows exactly its crop
            (x0, y0, x1, y1), label = boxes[b, -1].tolist(), gt_labels[b, -1].item()
            inner = img[b, :, int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
            assert inner.numel() and torch.allclose(inner, torch.tensor({5: 75.0, 6: 25.0}[label]))
        draws.append(boxes.clone())
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
