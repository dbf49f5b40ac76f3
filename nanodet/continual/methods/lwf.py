"""Learning without Forgetting: distil the whole raw head output of the previous model.

``L_det + alpha * MSE(S(x), T(x))`` over every class logit and distribution logit of every
prior, as in the Latent Distillation paper's LwF baseline.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .base import ContinualMethod
from .distillation import ALL_CHANNELS, LogitDistillation
from .settings import Settings, setting

if TYPE_CHECKING:
    from .parts import Part


@dataclasses.dataclass(frozen=True)
class LwFSettings(Settings):
    alpha: float = setting(1.0, float, "weight of the distillation of the whole head output")


class LwF(ContinualMethod):
    name = "lwf"
    Settings = LwFSettings

    def build_parts(self) -> list[Part]:
        return [LogitDistillation(self.settings.alpha, channels=ALL_CHANNELS)]
