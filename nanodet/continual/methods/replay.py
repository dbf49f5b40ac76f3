"""Replay: naive fine-tuning with a buffer of earlier tasks' images (``buffer.py``), 250 by default."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .base import ContinualMethod
from .settings import ALWAYS, Settings, setting


@dataclasses.dataclass(frozen=True)
class ReplaySettings(Settings):
    buffer_size: Optional[int] = setting(
        250, int, "images in the replay buffer", shown=ALWAYS,
        check=lambda v: None if v is not None and v >= 1 else "must be positive")


class Replay(ContinualMethod):
    """The buffer is the common ``buffer_size`` setting's part, which this preset always holds."""

    name = "replay"
    Settings = ReplaySettings
