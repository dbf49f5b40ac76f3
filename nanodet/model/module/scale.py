from __future__ import annotations

import torch
import torch.nn as nn


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar (state-dict key ``scale``)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
