"""A one-layer Lightning module for tests of trainer callbacks (checkpoints, timing, GC)."""

import pytorch_lightning as pl
import torch


class TinyModule(pl.LightningModule):
    """Random 4-d inputs, ``images`` of them in batches of 4; ``on_step(module)`` runs at the start
    of every training step. Counts ``images_seen`` and accepts a ``step_timer`` as TrainingTask."""

    def __init__(self, images=8, on_step=None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.images, self.on_step = images, on_step
        self.images_seen = 0
        self.step_timer = None

    def training_step(self, batch, batch_idx):
        self.images_seen += len(batch[0])
        if self.on_step is not None:
            self.on_step(self)
        return self.layer(batch[0]).square().mean()

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(self.images, 4))
        return torch.utils.data.DataLoader(data, batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def bare_trainer(callbacks, **kwargs) -> pl.Trainer:
    """A CPU Trainer with nothing but ``callbacks``: no logger, checkpoints, bars or summary."""
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks, **kwargs)
