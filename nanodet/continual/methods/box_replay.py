"""Box replay (as in ABR, Liu et al., ICCV 2023): old-class object crops pasted into new-task images.

A cheaper memory than whole images: after each task, crops of that task's boxes join a bank of at
most ``boxes`` crops, each stored at ``side`` x ``side`` pixels (uint8 BGR, 3 * side**2 bytes; a
250-image buffer of 320x320 images holds as many bytes as 3,333 crops of 48x48), with its label
and its size relative to its image. Every seen class keeps an equal share of the bank (the
classes learned last take what the others leave; within a class, crops are drawn at random,
boxes under ``MIN_BOX_PIXELS`` a side and difficult ones left out).

At tasks >= 1 every training batch, after its augmentation (the CPU pipeline's or the GPU's),
gets ``per_image`` crops pasted into each image: a crop drawn at random, scaled to its stored
relative size times a factor in ``SCALE_RANGE`` (at most ``MAX_CANVAS_SHARE`` of the canvas a
side), placed at the best of ``CANDIDATES`` random positions, the one covering the image's boxes
(its own and those pasted before it) least; if even that one covers more than ``MAX_COVERAGE`` of
some box, the crop is not pasted. A pasted crop is a box of its class in the image's ground
truth, so the old classes get positives on new-task images; the teacher sees the pasted image
too, so distillation covers the pasted objects. ABR also mixes boxes into mosaics and distils
their RoI features; those parts are not here.

The paste is a fixed amount of tensor work per batch (a grid sample per crop, no data-dependent
shapes); the per-image host lists of ground truth, where a batch has them, are updated by one copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...util.gt_batch import pad_gt_batch, with_extra_boxes
from ...util.io import atomic_write, atomic_write_json
from .parts import Part

if TYPE_CHECKING:
    from .base import TaskContext

MIN_BOX_PIXELS = 8  # crops of smaller boxes carry too few pixels to teach anything
SCALE_RANGE = (0.75, 1.25)
MAX_CANVAS_SHARE = 0.6
CANDIDATES = 8
MAX_COVERAGE = 0.3


class BoxBank:
    """The stored crops: ``crops [N, 3, S, S]`` uint8 BGR, ``labels [N]``, ``sizes [N, 2]`` (the
    box's width and height over its image's), ``tasks [N]`` (the task each came from)."""

    def __init__(self, side: int):
        self.side = side
        self.crops = np.zeros((0, 3, side, side), np.uint8)
        self.labels = np.zeros(0, np.int64)
        self.sizes = np.zeros((0, 2), np.float32)
        self.tasks = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        return self.crops.nbytes + self.labels.nbytes + self.sizes.nbytes

    def _keep(self, rows: np.ndarray) -> None:
        self.crops, self.labels = self.crops[rows], self.labels[rows]
        self.sizes, self.tasks = self.sizes[rows], self.tasks[rows]

    def add(self, crops: np.ndarray, labels: np.ndarray, sizes: np.ndarray, task: int) -> None:
        self.crops = np.concatenate([self.crops, crops])
        self.labels = np.concatenate([self.labels, labels])
        self.sizes = np.concatenate([self.sizes, sizes]).astype(np.float32)
        self.tasks = np.concatenate([self.tasks, np.full(len(labels), task, np.int64)])

    def balance(self, capacity: int, rng: np.random.Generator) -> None:
        """Keep at most ``capacity`` crops, every class an equal share: each class in turn (the
        fewest crops first) keeps up to an equal split of what is left, so a class with fewer crops
        than its share leaves the rest to the others."""
        classes, counts = np.unique(self.labels, return_counts=True)
        keep, left = [], capacity
        for k, c in enumerate(classes[np.argsort(counts, kind="stable")]):
            rows = np.flatnonzero(self.labels == c)
            share = left // (len(classes) - k)
            if len(rows) > share:
                rows = np.sort(rng.choice(rows, size=share, replace=False))
            keep.append(rows)
            left -= len(rows)
        self._keep(np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64))

    def save(self, folder: Path) -> None:
        def write(tmp: Path):
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
                np.savez(f, crops=self.crops, labels=self.labels, sizes=self.sizes, tasks=self.tasks)

        atomic_write(folder / "box_bank.npz", write)
        atomic_write_json(folder / "box_bank.json", {"side": self.side, "boxes": len(self)})

    @classmethod
    def load(cls, folder: Path) -> BoxBank:
        meta_path, path = folder / "box_bank.json", folder / "box_bank.npz"
        if not (meta_path.is_file() and path.is_file()):
            raise FileNotFoundError(f"{path}: the box-replay bank of a finished task is missing")
        bank = cls(int(json.loads(meta_path.read_text())["side"]))
        with np.load(path, allow_pickle=False) as stored:  # a file handed over never runs code
            bank.crops, bank.labels = stored["crops"], stored["labels"]
            bank.sizes, bank.tasks = stored["sizes"], stored["tasks"]
        if bank.crops.shape[1:] != (3, bank.side, bank.side) or not (
                len(bank.crops) == len(bank.labels) == len(bank.sizes) == len(bank.tasks)):
            raise ValueError(f"{path}: crops {bank.crops.shape} do not match {len(bank.labels)} labels of side "
                             f"{bank.side}")
        return bank


def crop_boxes(dataset, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every usable box of ``dataset``'s records as a ``side`` x ``side`` crop of its image:
    ``(crops [N, 3, S, S] uint8, labels [N], sizes [N, 2] relative to the image)``."""
    crops, labels, sizes = [], [], []
    for record in dataset.records:
        usable = ~record.difficult & (np.minimum(record.boxes[:, 2] - record.boxes[:, 0],
                                                 record.boxes[:, 3] - record.boxes[:, 1]) >= MIN_BOX_PIXELS)
        if not usable.any():
            continue
        img = dataset.read_image(record)
        height, width = img.shape[:2]
        for (x0, y0, x1, y1), label in zip(record.boxes[usable], record.labels[usable]):
            x0, y0 = int(max(np.floor(x0), 0)), int(max(np.floor(y0), 0))
            x1, y1 = int(min(np.ceil(x1), width)), int(min(np.ceil(y1), height))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            crop = cv2.resize(img[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA)
            crops.append(crop.transpose(2, 0, 1))
            labels.append(int(label))
            sizes.append(((x1 - x0) / width, (y1 - y0) / height))
    if not crops:
        return np.zeros((0, 3, side, side), np.uint8), np.zeros(0, np.int64), np.zeros((0, 2), np.float32)
    return np.stack(crops), np.asarray(labels, np.int64), np.asarray(sizes, np.float32)


def _coverage(paste: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``paste [B, C, 4]``, ``boxes [B, G, 4]`` -> ``[B, C]``: the largest share of a valid box's
    area that each candidate covers."""
    lt = torch.maximum(paste[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(paste[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-6).prod(dim=-1)
    return (inter / area[:, None, :]).masked_fill(~valid[:, None, :], 0.0).amax(dim=-1)


def paste_boxes(batch: dict, crops: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, per_image: int,
                mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """The batch with ``per_image`` crops pasted into each image and added to its ground truth.

    ``crops [N, 3, S, S]`` uint8 BGR on the batch's device, normalized here as the images were
    (``mean``, ``std`` per channel); ``sizes [N, 2]`` relative width and height. The input batch
    is not modified. Pasted boxes are in the network input's pixels, inside the canvas.
    """
    img = batch["img"]
    device, (num_images, _, height, width) = img.device, img.shape
    gt = pad_gt_batch(batch, device, with_ignore=batch.get("gt_bboxes_ignore") is not None)
    # [width, height] made by fill kernels: a host-to-device copy (torch.tensor, or setting an
    # element from a number) cannot be captured in a CUDA graph
    canvas = torch.stack([torch.full((), float(width), device=device), torch.full((), float(height), device=device)])
    shape = (num_images, per_image)

    def uniform(*size):
        return torch.rand(*size, device=device, generator=generator)

    chosen = (uniform(*shape) * len(labels)).long().clamp(max=len(labels) - 1)
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * uniform(*shape, 1)
    box_size = (sizes.float()[chosen] * scale * canvas).clamp(min=MIN_BOX_PIXELS)
    box_size = torch.minimum(box_size, MAX_CANVAS_SHARE * canvas)  # [B, K, 2] width, height
    corner = uniform(*shape, CANDIDATES, 2) * (canvas - box_size)[:, :, None, :]  # [B, K, C, 2]
    candidates = torch.cat([corner, corner + box_size[:, :, None, :]], dim=-1)  # [B, K, C, 4]

    occupied, occupied_valid = gt.bboxes, gt.valid
    pasted_boxes, pasted_valid = [], []
    out = img
    for k in range(per_image):  # each paste avoids the boxes before it, pasted ones included
        cover = _coverage(candidates[:, k], occupied, occupied_valid)  # [B, C]
        best = cover.argmin(dim=1)
        box = candidates[torch.arange(num_images, device=device), k, best]  # [B, 4]
        accepted = cover.gather(1, best[:, None])[:, 0] <= MAX_COVERAGE
        # Where each canvas pixel falls in the crop: [-1, 1] inside the box.
        center, half = (box[:, :2] + box[:, 2:]) / 2, (box[:, 2:] - box[:, :2]) / 2
        theta = torch.zeros(num_images, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 1, 1] = width / 2 / half[:, 0], height / 2 / half[:, 1]
        theta[:, 0, 2] = (width / 2 - center[:, 0]) / half[:, 0]
        theta[:, 1, 2] = (height / 2 - center[:, 1]) / half[:, 1]
        grid = F.affine_grid(theta, [num_images, 3, height, width], align_corners=False)
        crop = (crops[chosen[:, k]].float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)  # as the images
        patch = F.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=False)
        inside = (grid.abs() <= 1).all(dim=-1) & accepted[:, None, None]
        out = torch.where(inside[:, None], patch.to(out.dtype), out)
        pasted_boxes.append(box)
        pasted_valid.append(accepted)
        occupied = torch.cat([occupied, box[:, None]], dim=1)
        occupied_valid = torch.cat([occupied_valid, accepted[:, None]], dim=1)

    boxes = torch.stack(pasted_boxes, dim=1)  # [B, K, 4]
    valid = torch.stack(pasted_valid, dim=1)
    pasted_labels = labels[chosen]
    channels_last = img.is_contiguous(memory_format=torch.channels_last) and not img.is_contiguous()
    out = out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return {**with_extra_boxes(batch, gt, boxes, pasted_labels, valid), "img": out}


class BoxReplay(Part):
    """A bank of at most ``boxes`` old-class crops of ``side`` pixels, ``per_image`` of them pasted
    into every image of tasks >= 1.

    Its paste is written for the captured step (shapes fixed within a task, random numbers from
    the default CUDA generator, which a graph advances at every replay, no host copy), and runs
    there on the CPU's static path; its capture on a GPU is tested by tests/test_box_replay.py's
    CUDA-graph test (passed on an H200, 2026-12-03)."""

    def __init__(self, boxes: int, side: int = 48, per_image: int = 2):
        self.capacity, self.side, self.per_image = boxes, side, per_image
        self.bank = BoxBank(side)
        self._device_bank: tuple[torch.Tensor, ...] | None = None
        self._normalize: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_task_start(self, context: TaskContext, model: torch.nn.Module) -> None:
        mean, std = context.cfg.data.train.pipeline.normalize
        self._normalize = (torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
        self._device_bank = None

    def on_task_end(self, context: TaskContext, model: torch.nn.Module) -> None:
        crops, labels, sizes = crop_boxes(context.train_dataset.without_augmentation(), self.side)
        self.bank.add(crops, labels, sizes, context.index)
        self.bank.balance(self.capacity, np.random.default_rng([context.seed, context.index, 11]))
        self._device_bank = None

    def save_state(self, task_dir: Path) -> None:
        self.bank.save(Path(task_dir))

    def load_state(self, task_dir: Path) -> None:
        self.bank = BoxBank.load(Path(task_dir))
        self._device_bank = None

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> None:
        self._device_bank = tuple(torch.from_numpy(a).to(device) for a in
                                  (self.bank.crops, self.bank.labels, self.bank.sizes))
        if self._normalize is not None:
            self._normalize = tuple(t.to(device) for t in self._normalize)

    def augment_batch(self, context: TaskContext, batch: dict) -> dict:
        if context.index == 0 or not len(self.bank):
            return batch
        if self._device_bank is None:
            self.to(batch["img"].device)
        crops, labels, sizes = self._device_bank
        return paste_boxes(batch, crops, labels, sizes, self.per_image, *self._normalize)

    def buffer_bytes(self) -> int:
        return self.bank.nbytes()
