"""Pad a list of images of different sizes to one batch tensor."""

from typing import Sequence

import torch
import torch.nn.functional as F


def stack_batch_img(img_tensors: Sequence[torch.Tensor], divisible: int = 32,
                    pad_value: float = 0.0) -> torch.Tensor:
    """Stack CHW images into [B, C, H, W], padding each at the bottom and right.

    The common size is the largest height and width in the batch, rounded up to a multiple of
    ``divisible`` (0: no rounding) so every feature-map stride divides it. Padding bottom/right
    keeps pixel coordinates (and so the boxes and warp matrices) unchanged.
    """
    if len(img_tensors) == 0:
        raise ValueError("stack_batch_img needs at least one image")
    if divisible < 0:
        raise ValueError(f"divisible must be >= 0, got {divisible}")
    leading = img_tensors[0].shape[:-2]
    for img in img_tensors:
        if img.shape[:-2] != leading:
            raise ValueError(f"images differ in channels: {tuple(img.shape)} vs {tuple(leading)}")
    max_h = max(img.shape[-2] for img in img_tensors)
    max_w = max(img.shape[-1] for img in img_tensors)
    if divisible > 0:
        max_h = -(-max_h // divisible) * divisible
        max_w = -(-max_w // divisible) * divisible
    padded = [F.pad(img, [0, max_w - img.shape[-1], 0, max_h - img.shape[-2]], value=pad_value)
              for img in img_tensors]
    return torch.stack(padded, dim=0).contiguous()
