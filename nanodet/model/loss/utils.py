"""Element-wise weighting and reduction shared by the detection losses (mmdet's conventions)."""

from __future__ import annotations

import functools
from typing import Callable

import torch

REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce an element-wise loss by ``"none"``, ``"mean"`` or ``"sum"``."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def weight_reduce_loss(loss: torch.Tensor, weight: torch.Tensor | None = None, reduction: str = "mean",
                       avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
    """Multiply ``loss`` by ``weight`` (if any), then reduce it.

    With ``avg_factor`` the "mean" is ``sum / avg_factor`` (the detection losses average over
    the number of positives, not over all elements); ``avg_factor`` may be a tensor, which
    keeps the normalisation on the device (no host sync).
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == "mean":
        return loss.sum() / avg_factor
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can only be used with reduction="mean" or "none"')


def weighted_loss(loss_func: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Turn ``loss_func(pred, target, **kwargs) -> element-wise loss`` into
    ``f(pred, target, weight=None, reduction="mean", avg_factor=None, **kwargs)``."""

    @functools.wraps(loss_func)
    def wrapper(pred, target, weight=None, reduction="mean", avg_factor=None, **kwargs):
        loss = loss_func(pred, target, **kwargs)
        return weight_reduce_loss(loss, weight, reduction, avg_factor)

    return wrapper
