"""The data side of GPU augmentation: images decoded once (per run, shared by a dataset's subsets)
into a uint8 tensor on the device, and the loader that serves augmented batches of them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from .batch import GpuBatchAugment

if TYPE_CHECKING:
    from ..dataset.base import BaseDataset


class DecodedImageStore:
    """Decoded images by record id, per device, for a dataset and all its subsets.

    A continual run trains each task on a subset of one training set, so without this every task
    decoded its images again (4,800 for 15p1's task 0, then a few hundred per task, about half of
    them seen before). The store lives in the dataset's ``shared_cache``, which its subsets share,
    so each image is decoded once per run and a task's cache is one gather on the device.
    """

    def __init__(self) -> None:
        self._entries: dict = {}  # device -> {"row": {id: row}, "images", "sizes", "original"}

    def gather(self, dataset: BaseDataset, device: torch.device | str,
               workers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images [N, H, W, 3] on device, sizes [N, 2], original sizes [N, 2])`` of
        ``dataset.records``, decoding those not stored yet."""
        entry = self._entries.setdefault(str(device), {"row": {}, "images": None, "sizes": [], "original": []})
        new_records, seen = [], set()
        for record in dataset.records:
            if record.id not in entry["row"] and record.id not in seen:
                seen.add(record.id)
                new_records.append(record)
        if new_records:
            images, sizes, original = _decode(dataset, new_records, workers)
            images = images.to(device)
            start = len(entry["row"])
            entry["row"].update({r.id: start + i for i, r in enumerate(new_records)})
            entry["images"] = images if entry["images"] is None else torch.cat([entry["images"], images])
            entry["sizes"].append(sizes)
            entry["original"].append(original)
            entry["sizes"], entry["original"] = [torch.cat(entry["sizes"])], [torch.cat(entry["original"])]
        rows = torch.tensor([entry["row"][r.id] for r in dataset.records], dtype=torch.int64)
        if entry["images"] is None:  # an empty dataset
            width, height = dataset.input_size
            none = torch.zeros((0, 2), dtype=torch.int64)
            return torch.zeros((0, height, width, 3), dtype=torch.uint8, device=device), none, none
        images = entry["images"].index_select(0, rows.to(entry["images"].device))
        return images, entry["sizes"][0][rows], entry["original"][0][rows]


def _decode(dataset, records, workers: int):
    """Read and shrink ``records``' images in threads (OpenCV releases the GIL).

    Each image is placed with numpy, not torch: no dispatch and no intra-op threads per image
    (3,481 images: 5.2 s before, 4.3 to 4.7 s after, on the 2-core development machine)."""
    width, height = (int(s) for s in dataset.input_size)
    images = np.zeros((len(records), height, width, 3), dtype=np.uint8)
    sizes = np.zeros((len(records), 2), dtype=np.int64)
    original = np.zeros((len(records), 2), dtype=np.int64)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, (img, original_size) in enumerate(pool.map(lambda r: _load_shrunk(dataset, r), records)):
            images[i, :img.shape[0], :img.shape[1]] = img
            sizes[i] = img.shape[1], img.shape[0]
            original[i] = original_size
    return torch.from_numpy(images), torch.from_numpy(sizes), torch.from_numpy(original)


def _load_shrunk(dataset, record):
    """The record's image, shrunk (never enlarged) to fit the input size, and its original size."""
    img = dataset.read_image(record)
    input_w, input_h = dataset.input_size
    height, width = img.shape[:2]
    ratio = min(1.0, input_w / width, input_h / height)
    if ratio < 1.0:
        size = (max(1, min(input_w, round(width * ratio))), max(1, min(input_h, round(height * ratio))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, (width, height)


class DecodedImageCache:
    """Every image of a dataset decoded once, as uint8 BGR, shrunk to fit the input size.

    ``images`` is one ``[N, H, W, 3]`` uint8 tensor (H, W the input size; each image at the top
    left, zero elsewhere), on ``device`` (the GPU holds 5,000 images of 320x320 in 1.5 GB). The
    pixels come from the dataset's ``DecodedImageStore`` (decoded once for the dataset and its
    subsets). The ground truth is the dataset's ``__getitem__``'s (difficult boxes handled the
    same way).

    Args:
        dataset: a ``BaseDataset`` (its records, ``read_image``, ``input_size`` and
            ``shared_cache`` are used).
        device: where the image tensor lives.
        workers: decoding threads (OpenCV releases the GIL).
    """

    def __init__(self, dataset: BaseDataset, device: torch.device | str = "cpu", workers: int = 8) -> None:
        if getattr(dataset, "multi_scale", None):
            raise NotImplementedError("GPU augmentation does not support multi_scale (a random "
                                      "input size per sample); use the CPU pipeline")
        self.dataset = dataset
        self.input_size = tuple(int(s) for s in dataset.input_size)
        shared = getattr(dataset, "shared_cache", None)
        store = shared.setdefault("decoded_images", DecodedImageStore()) if shared is not None else DecodedImageStore()
        self.images, self.sizes, self.original_sizes = store.gather(dataset, device, workers)
        records = dataset.records
        self.gt_bboxes, self.gt_labels, self.gt_bboxes_ignore = [], [], []
        for record in records:
            trained = np.ones(len(record.labels), dtype=bool)
            if not dataset.train_on_difficult:
                trained = ~record.difficult
            self.gt_bboxes.append(record.boxes[trained])
            self.gt_labels.append(record.labels[trained])
            self.gt_bboxes_ignore.append(record.boxes[~trained])
        self.has_ignore = any(len(b) for b in self.gt_bboxes_ignore)

    def __len__(self):
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def img_info(self, indices: Iterable[int]) -> dict[str, Any]:
        """The collated ``img_info`` of these images (as ``naive_collate`` gives it)."""
        records = [self.dataset.records[i] for i in indices]
        return {"file_name": [r.file_name for r in records],
                "height": torch.tensor([r.height for r in records]),
                "width": torch.tensor([r.width for r in records]),
                "id": torch.tensor([r.id for r in records])}


class GpuBatchLoader:
    """Batches of a ``DecodedImageCache`` augmented by ``GpuBatchAugment``: an iterable to use
    where a DataLoader of the CPU pipeline would be (no workers: the device does the work).

    Args:
        cache, augment: the decoded images and the batch augmentation.
        batch_size, shuffle, drop_last: as the DataLoader's.
        seed: seeds the order and the augmentation of each epoch (``seed + epoch``); every
            iteration starts the next epoch unless ``set_epoch`` says otherwise.
        rank, world_size: under DDP, each process takes every ``world_size``-th image of the
            shared order, from its ``rank`` (as ``DistributedSampler`` shards).
        batch_sampler: an iterable of lists of cache indices (a DataLoader's ``batch_sampler``,
            e.g. replay's half-current, half-buffer batches); it replaces the order above.
    """

    def __init__(self, cache: DecodedImageCache, augment: GpuBatchAugment, batch_size: int,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, batch_sampler: Iterable[Sequence[int]] | None = None) -> None:
        self.cache, self.augment = cache, augment
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.batch_sampler = batch_sampler

    def _num_images(self):
        # The same count on every rank (the remainder is dropped), or DDP ranks would disagree on
        # the number of steps.
        return len(self.cache) // self.world_size

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = self._num_images()
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order and augmentation next (and its batches, when a batch
        sampler draws them), so that a resumed fit continues the epochs it was interrupted in."""
        self.epoch = epoch
        if callable(getattr(self.batch_sampler, "set_epoch", None)):
            self.batch_sampler.set_epoch(epoch)

    def _batches(self, generator):
        """(CPU index, the same on the cache's device) of each batch of the epoch."""
        if self.batch_sampler is not None:
            for rows in self.batch_sampler:
                index = torch.as_tensor(rows, dtype=torch.int64)
                yield index, index.to(self.cache.images.device, non_blocking=True)
            return
        n = len(self.cache)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size][:self._num_images()]
        # One copy per epoch, not waiting for the GPU (a pageable copy would wait for every queued step).
        device = self.cache.images.device
        order_on_cache = order.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else order
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start:start + self.batch_size], order_on_cache[start:start + self.batch_size]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        device = self.cache.images.device
        # On a GPU the batches are made on a stream of their own, so the next batch's augmentation
        # (about 1.25 ms at batch 64 on an H200) runs beside the training step instead of between
        # two steps. The values are the same on either stream.
        side = _augment_stream(device)
        consumer = torch.cuda.current_stream(device) if side is not None else None
        if side is not None:
            side.wait_stream(consumer)  # the cache and anything else queued before this epoch
        batches = self._batches(generator)
        while True:
            with torch.cuda.stream(side) if side is not None else nullcontext():
                try:
                    index, index_on_cache = next(batches)
                except StopIteration:
                    return
                images = self.cache.images.index_select(0, index_on_cache)
                rows = index.tolist()
                batch = self.augment(
                    images,
                    [self.cache.gt_bboxes[i] for i in rows],
                    [self.cache.gt_labels[i] for i in rows],
                    image_sizes=self.cache.sizes[index],
                    original_sizes=self.cache.original_sizes[index],
                    gt_bboxes_ignore=[self.cache.gt_bboxes_ignore[i] for i in rows] if self.cache.has_ignore else None,
                    img_info=self.cache.img_info(rows),
                    generator=generator,
                )
            if side is not None:
                # Whatever the consumer queues from now on waits for this batch; its memory is not
                # handed to the next batch until the consumer's work on it is done.
                consumer.wait_stream(side)
                for tensor in _device_tensors(batch):
                    tensor.record_stream(consumer)
            yield batch


_AUGMENT_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _augment_stream(device: torch.device) -> torch.cuda.Stream | None:
    """One side stream per CUDA device for the batches (None off a GPU)."""
    if device.type != "cuda":
        return None
    device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device not in _AUGMENT_STREAMS:
        _AUGMENT_STREAMS[device] = torch.cuda.Stream(device)
    return _AUGMENT_STREAMS[device]


def _device_tensors(value) -> Iterator[torch.Tensor]:
    """The CUDA tensors in a batch (nested in dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _device_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _device_tensors(item)
