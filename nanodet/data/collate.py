"""Batch collation that keeps variable-size items as lists (upstream's ``naive_collate``).

Images may differ in size (keep-ratio resize) and images hold different numbers of boxes, so
nothing is stacked here: the trainer pads and stacks the images on the device
(``stack_batch_img``) and the head reads the boxes per image. ``collate_function`` is upstream's
other collate, for batches whose images share one size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch

from .batch_process import stack_batch_img


def naive_collate(batch: Sequence[Any]) -> Any:
    """Collate a list of samples field by field.

    Dicts are collated key by key; Python numbers become a 1-D tensor (ints int64, floats
    float64, as upstream's collate); everything else (image tensors, numpy arrays, strings) is
    returned as a list with one item per sample.
    """
    elem = batch[0]
    if isinstance(elem, Mapping):
        return {key: naive_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, bool):
        return torch.tensor(batch, dtype=torch.bool)
    if isinstance(elem, int):
        return torch.tensor(batch, dtype=torch.int64)
    if isinstance(elem, float):
        return torch.tensor(batch, dtype=torch.float64)
    return list(batch)


def collate_and_pad(batch: Sequence[Mapping[str, Any]], divisible: int = 32,
                    pad_value: float = 0.0) -> dict[str, Any]:
    """``naive_collate``, then the images padded and stacked into one [B, C, H, W] tensor.

    Padding in the DataLoader workers spares the training step the work; the padding itself
    (bottom/right, to a multiple of ``divisible``) is ``stack_batch_img``'s.
    """
    collated = naive_collate(batch)
    collated["img"] = stack_batch_img(collated["img"], divisible=divisible, pad_value=pad_value)
    return collated


def collate_function(batch: Sequence[Any]) -> Any:
    """Upstream's ``collate_function``: ``naive_collate``, except that tensors (the images) are
    stacked into one [B, ...] tensor.

    Stacking needs one shape for every sample (a fixed-size resize, ``keep_ratio: false``); a
    batch of keep-ratio images of different sizes fails with the field's name: pad those with
    ``collate_and_pad``.
    """
    return _collate_stacking_tensors(batch, "batch")


def _collate_stacking_tensors(batch, field: str):
    elem = batch[0]
    if isinstance(elem, Mapping):
        return {key: _collate_stacking_tensors([sample[key] for sample in batch], f"{field}[{key!r}]")
                for key in elem}
    if isinstance(elem, torch.Tensor):
        shapes = sorted({tuple(item.shape) for item in batch})
        if len(shapes) > 1:
            raise ValueError(f"collate_function stacks {field}, whose tensors differ in shape ({shapes}); "
                             "collate_and_pad pads images of different sizes")
        return torch.stack(batch)
    return naive_collate(batch)
