"""Learning without Forgetting: distil the whole raw head output of the previous model.

``L_det + alpha * MSE(S(x), T(x))`` over every class logit and distribution logit of every
prior, as in the Latent Distillation paper's LwF baseline.
"""

from .base import ContinualMethod
from .teacher import logit_distillation


class LwF(ContinualMethod):
    name = "lwf"
    distills = True

    def __init__(self, alpha: float = 1.0, **options):
        super().__init__(**options)
        self.alpha = alpha

    def extra_losses(self, context, model, batch, outputs, teacher):
        if teacher is None:
            return {}
        return {"loss_logit_distill": self.alpha * logit_distillation(outputs.preds, teacher.preds)}

    def describe(self):
        return {**super().describe(), "alpha": self.alpha}
