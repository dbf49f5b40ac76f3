"""A replay buffer of earlier tasks' training images, replayed beside the current task's.

Every batch is half current task, half buffer; buffer images keep only their own task's boxes;
the epoch ends when the current task's images are used up. The buffer is filled after each task
and persisted in the task's folder, so a resumed run finds it.

Policies (``buffer_policy``):
    random    after task 0, ``buffer_size`` random task-0 images; after a later task, half old
              and half new at random (a new task with fewer than half a buffer of images keeps
              all of them and fills the rest with old ones). The paper's policy.
    balanced  every seen class gets an equal share of the buffer, counted in images (an image
              counts for each class it holds; ``select_balanced`` says how ties and images of
              several classes are chosen).
    ocdm      OCDM (Liang and Li, 2022): from the buffer and the new images, drop one image at a
              time, the one whose removal brings the buffer's class distribution of boxes
              closest to uniform, until the buffer fits.

Label propagation (``label_propagation``, as in RCLPOD): at the end of each task, before the
buffer is refilled, the model just trained labels the buffer's earlier images with its
detections of that task's classes scoring at least the threshold, except where one overlaps a
box the image already has (IoU 0.5 or more), so a replayed image no longer teaches "background"
where a newer class stands.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from ...data.dataset import ImageRecord
from ...trainer.builders import build_train_loader, distributed_rank
from ...trainer.evaluate import predict_detections
from ...util.io import atomic_write_json
from .parts import Part
from .settings import BUFFER_POLICIES

if TYPE_CHECKING:
    from ...util.config import CfgNode
    from .base import TaskContext

POLICIES = BUFFER_POLICIES
@dataclasses.dataclass
class BufferItem:
    record: ImageRecord  # holds only the boxes of ``task``'s classes
    task: int


def _pick(rng, items, count):
    if count >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=count, replace=False))]


def select_random(rng: np.random.Generator, old: list[BufferItem], new: list[BufferItem],
                  size: int) -> list[BufferItem]:
    if not old:
        return _pick(rng, new, size)
    new_count = min(len(new), size // 2)
    old_count = min(len(old), size - new_count)
    return _pick(rng, old, old_count) + _pick(rng, new, new_count)


def select_balanced(rng: np.random.Generator, old: list[BufferItem], new: list[BufferItem],
                    size: int) -> list[BufferItem]:
    """Every seen class an equal share of the buffer, counted in images: an image counts once for
    each class it holds a box of (a buffer image keeps only its own task's boxes).

    Greedy, one image at a time, from the buffer so far plus the new task's images: the class
    held by the fewest chosen images (ties: the lower class index) gets an image holding it, the
    one whose classes are the least represented after adding it (so an image of several classes
    is taken when it helps classes that are short, not ones that are ahead; ties at random). A
    class whose images run out keeps what it has and the others go on, so the buffer is full
    whenever there are ``size`` candidates.
    """
    candidates = old + new
    if len(candidates) <= size:
        return list(candidates)
    classes = sorted({int(c) for item in candidates for c in item.record.labels})
    column = {c: k for k, c in enumerate(classes)}
    holds = np.zeros((len(candidates), len(classes)), dtype=bool)
    for i, item in enumerate(candidates):
        holds[i, [column[int(c)] for c in item.record.labels]] = True
    available = holds.any(axis=1)
    images_per_class = np.zeros(len(classes), dtype=np.int64)
    chosen = []
    while len(chosen) < size and available.any():
        open_classes = holds[available].any(axis=0)
        target = int(np.argmin(np.where(open_classes, images_per_class, np.iinfo(np.int64).max)))
        holders = np.flatnonzero(available & holds[:, target])
        after = np.where(holds[holders], images_per_class + 1, 0).max(axis=1)
        best = holders[after == after.min()]
        pick = int(best[rng.integers(len(best))])
        chosen.append(pick)
        available[pick] = False
        images_per_class += holds[pick]
    # Images without a box of any class (none are stored today) fill what is left at random.
    taken = set(chosen)
    rest = [i for i in range(len(candidates)) if i not in taken]
    chosen += _pick(rng, rest, size - len(chosen))
    return [candidates[i] for i in sorted(chosen)]


def select_ocdm(rng: np.random.Generator, old: list[BufferItem], new: list[BufferItem],
                size: int) -> list[BufferItem]:
    """OCDM's greedy removal: while the candidates (the buffer and the new task's images) exceed
    ``size``, remove the image whose removal leaves the box labels' class distribution nearest
    to uniform over the seen classes (squared distance; ties at random). Distribution, not
    images: an image of three boxes of one class weighs three."""
    candidates = old + new
    if len(candidates) <= size:
        return list(candidates)
    classes = sorted({int(c) for item in candidates for c in item.record.labels})
    column = {c: k for k, c in enumerate(classes)}
    boxes = np.zeros((len(candidates), len(classes)), dtype=np.float64)
    for i, item in enumerate(candidates):
        np.add.at(boxes[i], [column[int(c)] for c in item.record.labels], 1.0)
    kept = np.ones(len(candidates), dtype=bool)
    totals = boxes.sum(axis=0)
    uniform = 1.0 / len(classes)
    for _ in range(len(candidates) - size):
        rows = np.flatnonzero(kept)
        after = totals - boxes[rows]  # the class counts without each remaining image
        share = after / np.maximum(after.sum(axis=1, keepdims=True), 1e-12)
        distance = ((share - uniform) ** 2).sum(axis=1)
        best = rows[np.flatnonzero(distance <= distance.min() + 1e-15)]
        drop = int(best[rng.integers(len(best))])
        kept[drop] = False
        totals -= boxes[drop]
    return [candidates[i] for i in np.flatnonzero(kept)]


SELECTIONS = {"random": select_random, "balanced": select_balanced, "ocdm": select_ocdm}


def propagate_labels(model: torch.nn.Module, buffer: list[BufferItem], context: TaskContext, score: float,
                     iou: float = 0.5) -> list[BufferItem]:
    """``buffer`` with the earlier tasks' images given ``model``'s detections of the current task's
    classes (score >= ``score``, not overlapping an existing box by ``iou`` or more)."""
    from torchvision.ops import box_iou

    earlier = [item for item in buffer if item.task < context.index]
    if not earlier:
        return buffer
    dataset = context.train_dataset.with_records([item.record for item in earlier]).without_augmentation()
    device = next(model.parameters()).device
    found = predict_detections(model, dataset, context.cfg, device)
    keep = np.isin(found.labels, context.new_classes) & (found.scores >= score)
    updated = {}
    for item in earlier:
        rows = np.flatnonzero(keep & (found.image_ids == int(item.record.id)))
        if not len(rows):
            continue
        record = item.record
        boxes = torch.as_tensor(found.boxes[rows], dtype=torch.float32)
        if len(record.boxes):
            overlap = box_iou(boxes, torch.as_tensor(record.boxes, dtype=torch.float32)).amax(dim=1)
            rows, boxes = rows[(overlap < iou).numpy()], boxes[overlap < iou]
        if not len(rows):
            continue
        updated[id(item)] = dataclasses.replace(item, record=dataclasses.replace(
            record, boxes=np.concatenate([record.boxes, boxes.numpy()]).astype(np.float32),
            labels=np.concatenate([record.labels, found.labels[rows]]).astype(np.int64),
            difficult=np.concatenate([record.difficult, np.zeros(len(rows), bool)])))
    return [updated.get(id(item), item) for item in buffer]


class ReplayBatchSampler(torch.utils.data.Sampler):
    """Indices into the current task's images followed by the buffer's: half of each batch from each.

    Current-task images are each used once per epoch; buffer images are drawn in random order,
    cycling when the buffer is smaller than the epoch's share. Under DDP every rank draws the same
    epoch (same seed) and takes every ``world``-th batch, the same number on each rank.
    """

    def __init__(self, num_current: int, num_buffer: int, batch_size: int, seed: int):
        self.num_current, self.num_buffer = num_current, num_buffer
        self.current_per_batch = max(batch_size - batch_size // 2, 1)
        self.buffer_per_batch = batch_size // 2
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s batches next (Lightning calls this; a resumed fit so continues
        with the epoch it stopped at, not with the first)."""
        self.epoch = epoch

    def _global_len(self):
        return max(self.num_current // self.current_per_batch, 1)

    def __len__(self):
        _, world = distributed_rank()
        return max(self._global_len() // world, 1)

    def __iter__(self):
        rank, world = distributed_rank()
        batches = list(self._epoch_batches())
        needed = len(self) * world  # every rank gets len(self) batches, even from a tiny epoch
        batches = (batches * -(-needed // len(batches)))[:needed]
        yield from batches[rank::world]

    def _epoch_batches(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        current = rng.permutation(self.num_current)
        needed = self._global_len() * self.buffer_per_batch
        buffer = np.concatenate([rng.permutation(self.num_buffer)
                                 for _ in range(-(-needed // max(self.num_buffer, 1)))])[:needed]
        for b in range(self._global_len()):
            cur = current[b * self.current_per_batch:(b + 1) * self.current_per_batch]
            buf = buffer[b * self.buffer_per_batch:(b + 1) * self.buffer_per_batch] + self.num_current
            yield [int(i) for i in np.concatenate([cur, buf])]


class ImageReplay(Part):
    """``size`` earlier-task images (``policy``: random or balanced), half of every batch."""

    def __init__(self, size: int, policy: str = "random", label_propagation: float | None = None):
        if policy not in SELECTIONS:
            raise ValueError(f"buffer policy must be one of {POLICIES}, got {policy!r}")
        self.size, self.policy = size, policy
        self.label_propagation = label_propagation
        self.buffer: list[BufferItem] = []

    # ------------------------------------------------------------------ the buffer
    def on_task_end(self, context: TaskContext, model: torch.nn.Module) -> None:
        if self.label_propagation is not None:
            self.buffer = propagate_labels(model, self.buffer, context, self.label_propagation)
        rng = np.random.default_rng([context.seed, context.index, 7])
        new = [BufferItem(r, context.index) for r in context.train_dataset.records]
        self.buffer = SELECTIONS[self.policy](rng, self.buffer, new, self.size)

    def save_state(self, task_dir: Path) -> None:
        atomic_write_json(Path(task_dir) / "buffer.json", [
            {"task": item.task, "id": item.record.id, "file_name": item.record.file_name,
             "height": item.record.height, "width": item.record.width, "boxes": item.record.boxes,
             "labels": item.record.labels, "difficult": item.record.difficult}
            for item in self.buffer
        ])

    def load_state(self, task_dir: Path) -> None:
        path = Path(task_dir) / "buffer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the replay buffer of a finished task is missing")
        self.buffer = [BufferItem(ImageRecord(**{k: v for k, v in entry.items() if k != "task"}), entry["task"])
                       for entry in json.loads(path.read_text())]

    def buffer_bytes(self) -> int:
        """Memory of the stored images (decoded, uint8) and their boxes and labels."""
        return sum(item.record.height * item.record.width * 3 + item.record.boxes.nbytes + item.record.labels.nbytes
                   for item in self.buffer)

    # ------------------------------------------------------------------ batches
    def train_dataloader(self, context: TaskContext, cfg: CfgNode,
                         device: torch.device | str) -> Iterable[dict[str, Any]] | None:
        if not self.buffer:
            return None  # the method's plain loader
        # One dataset of the current task's images followed by the buffer's, so the same batches
        # come from the CPU pipeline or from the GPU augmentation.
        current = context.train_dataset
        combined = current.with_records(list(current.records) + [item.record for item in self.buffer])
        sampler = ReplayBatchSampler(len(current), len(self.buffer), cfg.device.batchsize_per_gpu,
                                     seed=context.seed + context.index)
        return build_train_loader(combined, cfg, device, seed=context.seed + context.index, batch_sampler=sampler)
