"""Evaluation outside Lightning: run a detector over a dataset and score it with an evaluator.

Used by tools/test.py and the continual-learning runner, where a plain loop is simpler and
cheaper than a Trainer. What makes it fast (the runner evaluates after every task):

* ``EvalImages`` decodes and resizes every image once (the evaluation pipeline's own warp, so the
  pixels are the CPU pipeline's) and keeps them as uint8 on the device; a run reuses them for
  every evaluation, each task's subset by row;
* batches are normalised and padded on the device exactly as the CPU collate does them (same
  float32 operations, same batches, same padding), so the network sees the same input;
* inference runs in the training precision (``device.precision``, ``device.channels_last``), every
  batch of the same size (the last one filled with blank images, their detections dropped);
* decoding and NMS run on the device for the whole batch (``NanoDetPlusHead.detect``), with one
  copy of the kept boxes to the host per batch; they are mapped back to the original images in
  one vectorised step and returned as flat ``Detections``, which the evaluators take directly.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import torch

from ..data.dataset import BaseDataset
from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..evaluator.detections import Detections
from ..util.box_transform import warp_boxes
from ..util.config import CfgNode
from .builders import on_this_device, resolve_precision

PAD_DIVISIBLE = 32  # as collate_and_pad pads evaluation batches


class EvalImages:
    """The evaluation images of ``dataset`` after its resize warp, uint8, on ``device``.

    ``images [N, H, W, 3]`` holds image ``i`` at the top left (zero elsewhere), ``sizes [N, 2]``
    its (width, height) after the warp, ``warp_matrices [N, 3, 3]`` float32 the warp (to map
    detections back). Any subset of the dataset (same records) is served by ``rows``.
    """

    def __init__(self, dataset: BaseDataset, device: torch.device | str = "cpu", workers: int = 8) -> None:
        self.dataset = dataset
        records = dataset.records
        with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV releases the GIL
            warped = list(pool.map(self._warp, records))
        height = max([img.shape[0] for img, _ in warped], default=1)
        width = max([img.shape[1] for img, _ in warped], default=1)
        images = np.zeros((len(records), height, width, 3), dtype=np.uint8)
        for i, (img, _) in enumerate(warped):
            images[i, :img.shape[0], :img.shape[1]] = img
        self.images = torch.from_numpy(images).to(device)
        self.sizes = np.array([[img.shape[1], img.shape[0]] for img, _ in warped], dtype=np.int64).reshape(-1, 2)
        self.warp_matrices = np.stack([m for _, m in warped]) if warped else np.zeros((0, 3, 3), np.float32)
        self._row_of = {int(r.id): i for i, r in enumerate(records)}
        mean, std = dataset.pipeline.color.mean, dataset.pipeline.color.std
        # The CPU pipeline's arithmetic: float32 image / 255, then (img - mean / 255) / (std / 255).
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1) / 255
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1) / 255

    def _warp(self, record):
        meta = {"img": self.dataset.read_image(record)}
        meta = self.dataset.pipeline.shape_transform(meta, dst_shape=self.dataset.input_size)
        return meta["img"], meta["warp_matrix"]

    def rows(self, dataset: BaseDataset) -> np.ndarray:
        """The rows of ``dataset``'s images (this dataset or a subset of it)."""
        try:
            return np.array([self._row_of[int(r.id)] for r in dataset.records], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"image id {err.args[0]} is not among the cached evaluation images") from None

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """The network's input for these rows: normalised, padded to a multiple of 32, zero outside
        each image, as ``collate_and_pad`` builds it from the CPU pipeline's samples."""
        width, height = self.sizes[rows].max(axis=0)
        width = -(-int(width) // PAD_DIVISIBLE) * PAD_DIVISIBLE
        height = -(-int(height) // PAD_DIVISIBLE) * PAD_DIVISIBLE
        index = torch.from_numpy(rows).to(self.images.device)
        stored = self.images.index_select(0, index)[:, :height, :width]
        if stored.shape[1] < height or stored.shape[2] < width:  # the canvas may exceed the storage
            stored = torch.nn.functional.pad(stored, (0, 0, 0, width - stored.shape[2], 0, height - stored.shape[1]))
        img = stored.permute(0, 3, 1, 2).float() / 255
        img = (img - self.mean.to(img.device)) / self.std.to(img.device)
        sizes = torch.from_numpy(self.sizes[rows]).to(img.device)
        inside = ((torch.arange(width, device=img.device)[None, None, :] < sizes[:, None, None, 0])
                  & (torch.arange(height, device=img.device)[None, :, None] < sizes[:, None, None, 1]))
        return torch.where(inside[:, None], img, 0.0)


def inference_context(device: torch.device, precision: int | str | None = None) -> contextlib.AbstractContextManager:
    """Autocast in the training precision (``device.precision``) on a GPU; fp32 otherwise."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(resolve_precision(precision, "gpu"))
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict_detections(model: torch.nn.Module, dataset: BaseDataset, cfg: CfgNode, device: torch.device | str = "cpu",
                       batch_size: int | None = None, images: EvalImages | None = None) -> Detections:
    """Detections of ``model`` on every image of ``dataset`` (``images``: its decoded images, or
    those of a dataset it is a subset of; decoded here when not given)."""
    device = torch.device(device)
    images = images if images is not None else EvalImages(dataset, device, workers=cfg.device.workers_per_gpu)
    batch_size = batch_size or cfg.device.batchsize_per_gpu
    channels_last = on_this_device(cfg.device.get("channels_last"), device)
    rows = images.rows(dataset)
    ids = np.array([int(r.id) for r in dataset.records], dtype=np.int64)
    widths = np.array([r.width for r in dataset.records], dtype=np.float64)
    heights = np.array([r.height for r in dataset.records], dtype=np.float64)
    was_training = model.training
    model.eval().to(device)
    parts = []
    try:
        for start in range(0, len(rows), batch_size):
            batch_rows = rows[start:start + batch_size]
            img = images.batch(batch_rows)
            if len(batch_rows) < batch_size:
                # Blank images fill the last batch: every batch has the training batch's shape, so
                # cuDNN plans no new convolutions (on an H200 planning them for one new batch size
                # costs seconds, and each task's evaluation set has another size).
                img = torch.cat([img, img.new_zeros((batch_size - len(batch_rows), *img.shape[1:]))])
            if channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            with inference_context(device, cfg.device.precision):
                preds = model(img)
            image, dets, labels = model.head.detect(preds, img.shape[2:])
            real = image < len(batch_rows)
            image, dets, labels = image[real], dets[real], labels[real]
            image, dets, labels = image.cpu().numpy(), dets.float().cpu().numpy(), labels.cpu().numpy()
            position = start + image  # index into this dataset's records
            inverse = np.linalg.inv(images.warp_matrices[batch_rows])[image]
            boxes = warp_boxes(dets[:, :4], inverse, widths[position], heights[position])
            parts.append((ids[position], labels.astype(np.int64), boxes, dets[:, 4]))
    finally:
        model.train(was_training)
    return Detections.concatenate(parts)


def predict_dataset(model: torch.nn.Module, dataset: BaseDataset, cfg: CfgNode, device: torch.device | str = "cpu",
                    batch_size: int | None = None,
                    num_workers: int | None = None) -> dict[int, dict[int, list[list[float]]]]:
    """Detections of ``model`` on every image of ``dataset`` in upstream's results format."""
    detections = predict_detections(model, dataset, cfg, device, batch_size)
    return detections.to_results([r.id for r in dataset.records], model.head.num_classes)


def evaluate_model(model: torch.nn.Module, dataset: BaseDataset,
                   evaluator: Union[CocoDetectionEvaluator, VOCDetectionEvaluator], cfg: CfgNode,
                   device: torch.device | str = "cpu", class_ids: Iterable[int] | None = None,
                   save_dir: str | Path | None = None, batch_size: int | None = None,
                   num_workers: int | None = None) -> dict[str, Any]:
    detections = predict_detections(model, dataset, cfg, device, batch_size)
    return evaluator.evaluate(detections, save_dir=save_dir, class_ids=class_ids)
