"""SID (selective and intermediate distillation, simplified as in the Latent Distillation paper).

The whole student trains on ``L_det + alpha * MSE(class logits of old and future classes)
+ beta * sum over levels of MSE(head tower output of S, of T)``. The current task's class logits
are not distilled: the new labels teach them. (The original code distilled only the old classes
through a slicing bug and swapped alpha and beta relative to its README; here alpha always weighs
logits and beta always weighs features.)
"""

import dataclasses

from .base import ContinualMethod
from .settings import Settings, setting
from .teacher import feature_distillation, logit_distillation


@dataclasses.dataclass(frozen=True)
class SIDSettings(Settings):
    alpha: float = setting(1.0, float, "weight of logit distillation")
    beta: float = setting(1.0, float, "weight of feature distillation")


class SID(ContinualMethod):
    name = "sid"
    distills = True
    Settings = SIDSettings

    def distilled_classes(self, context) -> list[int]:
        """Old and future classes: every class but the current task's."""
        return sorted(context.old_classes + context.future_classes)

    def extra_losses(self, context, model, batch, outputs, teacher):
        if teacher is None:
            return {}
        return {
            "loss_logit_distill": self.settings.alpha * logit_distillation(
                outputs.preds, teacher.preds, self.distilled_classes(context)),
            "loss_feature_distill": self.settings.beta * feature_distillation(outputs.towers, teacher.towers),
        }
