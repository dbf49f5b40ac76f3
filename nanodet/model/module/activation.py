"""Activation layers by name, as upstream NanoDet's configs spell them."""

from __future__ import annotations

import torch.nn as nn

ACTIVATIONS = {
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "ReLU6": nn.ReLU6,
    "SELU": nn.SELU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "PReLU": nn.PReLU,
    "SiLU": nn.SiLU,
    "HardSwish": nn.Hardswish,
    "Hardswish": nn.Hardswish,
    None: nn.Identity,
}


def act_layers(name: str | None) -> nn.Module:
    """A fresh activation module for ``name`` (None gives an identity)."""
    if name not in ACTIVATIONS:
        known = [key for key in ACTIVATIONS if key is not None]
        raise ValueError(f"unknown activation {name!r}; known: {known} or None")
    if name == "LeakyReLU":
        # Upstream's slope; every NanoDet-Plus checkpoint was trained with it.
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if name == "GELU":
        return nn.GELU()  # has no in-place variant
    if name == "PReLU":
        return nn.PReLU()  # learnable: adds an `act.weight` key like upstream
    return ACTIVATIONS[name](inplace=True)
