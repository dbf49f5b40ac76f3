"""Feeding a dataset to a fixed-size ONNX model, and scoring an ONNX model with the evaluator.

An exported model takes one image of exactly its input size. The val pipeline resizes an image
to fit that size (keeping its aspect ratio if the config says so); the image is then padded at
the bottom and right to the full size, which, as for PyTorch batches, leaves pixel coordinates
and so the warp matrix unchanged.

The raw ONNX output carries class probabilities (the head's export convention, as upstream's
ONNX graph); ``evaluate_onnx`` turns them back into logits and hands them to the PyTorch head's
``post_process``, so decoding, NMS and the mapping to the original image are exactly those the
PyTorch model gets.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from ..data.collate import naive_collate
from ..data.dataset import BaseDataset, build_dataset
from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..model.head import NanoDetPlusHead

# Probabilities are clamped this far from 0 and 1 before the logit; post_process's sigmoid then
# gives them back up to this error, far below its 0.05 score threshold.
PROBABILITY_EPS = 1e-6


def build_dataset_at_size(dataset_cfg: Mapping[str, Any], input_size: Sequence[int], class_names: Sequence[str],
                          mode: str = "val") -> BaseDataset:
    """``build_dataset`` of a config node, resizing to ``input_size`` (w, h) instead of the
    node's own; ``mode`` "val" (the default) applies no augmentation, also to a train node."""
    return build_dataset({**dataset_cfg, "input_size": [int(s) for s in input_size]}, mode,
                         class_names=class_names)


def fixed_size_collate(samples: Sequence[Mapping[str, Any]], input_size: tuple[int, int]) -> dict[str, Any]:
    """``naive_collate``, with every image padded (bottom, right) to ``input_size`` (w, h)."""
    width, height = input_size
    batch = naive_collate(samples)
    images = []
    for img in batch["img"]:
        img_h, img_w = img.shape[-2:]
        if img_h > height or img_w > width:
            raise ValueError(f"an image of {img_w}x{img_h} does not fit the model input "
                             f"{width}x{height}: the dataset's input_size must match the model's")
        images.append(F.pad(img, [0, width - img_w, 0, height - img_h]))
    batch["img"] = torch.stack(images).contiguous()
    return batch


def fixed_size_batches(dataset: torch.utils.data.Dataset, input_size: Sequence[int],
                       indices: Iterable[int] | None = None, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Single-image batches of ``dataset`` (all images, or ``indices``) at exactly ``input_size``."""
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    return torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=num_workers,
        collate_fn=functools.partial(fixed_size_collate, input_size=tuple(input_size)),
    )


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` image indices spread evenly over ``0..total-1`` (all of them when fewer)."""
    if count >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session with ``threads`` threads (default: onnxruntime's choice)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: quantized graphs log many notices
    # Idle threads would otherwise spin after each run and starve the PyTorch post-processing
    # that runs between two images (a 10x slowdown of a whole evaluation).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_input_size(session: ort.InferenceSession) -> tuple[int, int]:
    """(width, height) of a fixed-size ``[1, 3, H, W]`` model input."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(s, int) for s in shape[2:]):
        raise ValueError(f"expected a fixed [1, 3, H, W] input, the model has {shape}")
    return shape[3], shape[2]


def raw_output_to_preds(output: np.ndarray, num_classes: int) -> torch.Tensor:
    """The raw ONNX output (class probabilities, distribution logits) as the PyTorch head's
    output (class logits, distribution logits), ready for ``post_process``."""
    preds = torch.from_numpy(np.asarray(output, dtype=np.float32))
    scores, distributions = preds[..., :num_classes], preds[..., num_classes:]
    logits = torch.logit(scores.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS))
    return torch.cat([logits, distributions], dim=-1)


def levels_to_raw(outputs: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-level outputs (``export_onnx(per_level=True)``: ``[1, C + 4 * (reg_max + 1), h, w]``
    logits) as the raw output ``[1, N, C + ...]``, class probabilities first, levels in order."""
    flat = np.concatenate([np.asarray(o, np.float32).reshape(o.shape[0], o.shape[1], -1) for o in outputs], axis=2)
    raw = flat.transpose(0, 2, 1).copy()
    raw[..., :num_classes] = 1.0 / (1.0 + np.exp(-raw[..., :num_classes]))
    return raw


def predict_onnx(session: ort.InferenceSession, head: NanoDetPlusHead, dataset: torch.utils.data.Dataset,
                 num_workers: int = 0) -> dict[int, dict[int, list[list[float]]]]:
    """Detections of the ONNX model on every image of ``dataset``, in upstream's results
    format (``{img_id: {label: [[x0, y0, x1, y1, score], ...]}}``), post-processed by ``head``
    (a ``NanoDetPlusHead`` of the same config; its weights are not used). The model gives the
    raw output, or one output per level (``--per-level``)."""
    outputs = session.get_outputs()
    expected = head.num_outputs
    per_level = len(outputs) == len(head.strides) and all(o.shape[1] == expected for o in outputs)
    if not per_level and (len(outputs) != 1 or outputs[0].shape[-1] != expected):
        shapes = [o.shape for o in outputs]
        raise ValueError(f"expected one raw output [1, N, {expected}] or one per level (an export without "
                         f"--decode), the model has {shapes}")
    input_name = session.get_inputs()[0].name

    def run(image):
        got = session.run(None, {input_name: image})
        return levels_to_raw(got, head.num_classes) if per_level else got[0]

    return predict_raw(run, onnx_input_size(session), head, dataset, num_workers)


def predict_raw(run: Callable[[np.ndarray], np.ndarray], input_size: Sequence[int], head: NanoDetPlusHead,
                dataset: torch.utils.data.Dataset, num_workers: int = 0) -> dict[int, dict[int, list[list[float]]]]:
    """``predict_onnx`` for any runner of the exported model: ``run`` maps a ``[1, 3, H, W]`` image
    at ``input_size`` (w, h) to the raw output (a LiteRT model: ``nanodet.deploy.tflite``)."""
    results = {}
    for batch in fixed_size_batches(dataset, input_size, num_workers=num_workers):
        output = run(batch["img"].numpy())
        results.update(head.post_process(raw_output_to_preds(output, head.num_classes), batch))
    return results


def evaluate_onnx(onnx_path: str | Path, head: NanoDetPlusHead, dataset: torch.utils.data.Dataset,
                  evaluator: Union[CocoDetectionEvaluator, VOCDetectionEvaluator], num_workers: int = 0,
                  threads: int | None = None, save_dir: str | Path | None = None,
                  class_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """The evaluator's metrics of the ONNX model at ``onnx_path`` on ``dataset`` (whose
    ``input_size`` must be the model's)."""
    session = onnx_session(onnx_path, threads)
    results = predict_onnx(session, head, dataset, num_workers)
    return evaluator.evaluate(results, save_dir=save_dir, class_ids=class_ids)
