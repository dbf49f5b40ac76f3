"""SID (selective and intermediate distillation, simplified as in the Latent Distillation paper).

The whole student trains on ``L_det + alpha * MSE(class logits of old and future classes)
+ beta * sum over levels of MSE(head tower output of S, of T)``. The current task's class logits
are not distilled: the new labels teach them. (The original code distilled only the old classes
through a slicing bug and swapped alpha and beta relative to its README; here alpha always weighs
logits and beta always weighs features.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .base import ContinualMethod
from .distillation import NOT_NEW_CLASSES, FeatureDistillation, LogitDistillation
from .settings import Settings, setting

if TYPE_CHECKING:
    from .parts import Part


@dataclasses.dataclass(frozen=True)
class SIDSettings(Settings):
    alpha: float = setting(1.0, float, "weight of logit distillation")
    beta: float = setting(1.0, float, "weight of feature distillation")


class SID(ContinualMethod):
    name = "sid"
    Settings = SIDSettings

    def build_parts(self) -> list[Part]:
        return [LogitDistillation(self.settings.alpha, channels=NOT_NEW_CLASSES),
                FeatureDistillation(self.settings.beta)]
