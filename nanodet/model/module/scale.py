import torch
import torch.nn as nn


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar (state-dict key ``scale``)."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x):
        return x * self.scale
