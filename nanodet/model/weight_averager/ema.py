"""Exponential moving average of a model's parameters and buffers (upstream NanoDet's, after d2go)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn


class ExpMovingAverager:
    """Keeps ``ema = (1 - w) * ema + w * value`` for every parameter and buffer.

    The weight of the new value starts near 1 and decays to ``1 - decay``::

        w(step) = decay * exp(-(1 + step) / 2000) + (1 - decay)

    so early in training the average follows the model closely (its first weights are
    random), and later it averages over about ``1 / (1 - decay)`` steps.

    Args:
        decay: in [0, 1]; 0 copies the model every step, 1 freezes the average after warm-up.
        device: if set, the averaged state is kept on this device (e.g. "cpu" to save GPU memory).
    """

    def __init__(self, decay: float = 0.9998, device: torch.device | str | None = None) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.device = device
        self.state = {}

    @staticmethod
    def _named_tensors(model):
        return itertools.chain(model.named_parameters(), model.named_buffers())

    def load_from(self, model: nn.Module) -> None:
        """Start the average from ``model``'s current weights."""
        self.state.clear()
        for name, value in self._named_tensors(model):
            value = value.detach().clone()
            self.state[name] = value.to(self.device) if self.device else value

    def has_inited(self) -> bool:
        return len(self.state) > 0

    def apply_to(self, model: nn.Module) -> None:
        """Copy the averaged weights into ``model`` (in place)."""
        with torch.no_grad():
            for name, value in self._named_tensors(model):
                if name not in self.state:
                    raise KeyError(
                        f"EMA state has no entry {name!r}; it holds {len(self.state)} entries "
                        "from another model"
                    )
                value.copy_(self.state[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.state.clear()
        for name, value in state_dict.items():
            self.state[name] = value.to(self.device) if self.device else value

    def to(self, device: torch.device | str) -> None:
        """Move the averaged state to ``device`` and keep it there on later updates.

        (Upstream moved the state but kept the old ``device``, so the next ``update`` mixed
        devices.)
        """
        self.device = device
        for name, value in self.state.items():
            self.state[name] = value.to(device)

    def calculate_decay(self, iteration: int) -> float:
        """Weight of the model's current value at ``iteration`` (upstream's ``calculate_dacay``)."""
        return self.decay * math.exp(-(1 + iteration) / 2000) + (1 - self.decay)

    calculate_dacay = calculate_decay  # upstream's spelling

    def update(self, model: nn.Module, iteration: int) -> None:
        weight = self.calculate_decay(iteration)
        averaged, current, averaged_int, current_int = [], [], [], []
        for name, value in self._named_tensors(model):
            average = self.state[name]
            value = value.detach().to(average.device)
            if average.is_floating_point():
                averaged.append(average)
                current.append(value.to(average.dtype))
            else:
                averaged_int.append(average)
                current_int.append(value)
        # One multi-tensor kernel per list instead of four kernels per tensor: a NanoDet has
        # about 600 parameters and buffers, and their launches held up every training step.
        with torch.no_grad():
            if averaged:
                torch._foreach_lerp_(averaged, current, weight)  # average + w * (value - average)
            if averaged_int:  # num_batches_tracked: mixed in float, truncated by copy_, as upstream
                mixed = torch._foreach_add(torch._foreach_mul(averaged_int, 1 - weight),
                                           torch._foreach_mul(current_int, weight))
                torch._foreach_copy_(averaged_int, mixed)
