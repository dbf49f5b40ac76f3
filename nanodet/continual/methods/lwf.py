"""Learning without Forgetting: distil the whole raw head output of the previous model.

``L_det + alpha * MSE(S(x), T(x))`` over every class logit and distribution logit of every
prior, as in the Latent Distillation paper's LwF baseline.
"""

import dataclasses

from .base import ContinualMethod
from .settings import Settings, setting
from .teacher import logit_distillation


@dataclasses.dataclass(frozen=True)
class LwFSettings(Settings):
    alpha: float = setting(1.0, float, "weight of the distillation of the whole head output")


class LwF(ContinualMethod):
    name = "lwf"
    distills = True
    Settings = LwFSettings

    def extra_losses(self, context, model, batch, outputs, teacher):
        if teacher is None:
            return {}
        return {"loss_logit_distill": self.settings.alpha * logit_distillation(outputs.preds, teacher.preds)}
