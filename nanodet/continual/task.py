"""The Lightning module of one continual-learning task: TrainingTask plus the method's hooks."""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Union

import torch

from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..trainer import compile as compiling
from ..trainer.builders import on_this_device
from ..trainer.task import TrainingTask
from ..util.config import CfgNode
from .methods.base import ContinualMethod, TaskContext


# Steps timed as the fit's warm-up: the captured step runs two eagerly, then captures its graph.
TIMED_WARMUP_STEPS = 3


class ContinualTask(TrainingTask):
    """Trains ``model`` on one task; ``method`` adds its loss terms, freezing and batches.

    A fresh one is made for every task, so each task gets a fresh optimizer, schedule and
    warm-up (capped by the task's own length in ``TrainingTask.on_fit_start``).
    """

    def __init__(self, cfg: CfgNode, model: torch.nn.Module, method: ContinualMethod, context: TaskContext,
                 evaluator: Union[CocoDetectionEvaluator, VOCDetectionEvaluator] | None = None) -> None:
        super().__init__(cfg, evaluator, model=model)
        if evaluator is None:  # a task that is not validated: Lightning then sets up no val loop
            self.validation_step = None
        self.method = method
        self.context = context
        self._seconds_before_resume = 0.0
        self._clock_start = time.perf_counter()
        # Wall seconds of the first TIMED_WARMUP_STEPS steps of this fit (cuDNN's algorithm search,
        # the CUDA graph's capture, compilation), which the later steps do not pay again.
        self.warmup_seconds = None
        self.fit_started = self._clock_start  # when the first step began (on_train_start)
        self.data_seconds = 0.0  # of the start-up, building the training batches' loader

    def train(self, mode: bool = True) -> ContinualTask:
        # Lightning switches the whole module to train mode at every epoch; frozen parts go
        # straight back to eval so their BatchNorm statistics never move.
        super().train(mode)
        if mode and hasattr(self, "method"):
            for module in self.method.frozen_modules(self.model):
                module.eval()
        return self

    def on_fit_start(self) -> None:
        super().on_fit_start()
        channels_last = on_this_device(self.cfg.device.get("channels_last"), self.device)
        self.method.to(self.device, torch.channels_last if channels_last else torch.preserve_format)
        if self.compile_mode and self.method.teacher is not None:  # its own compiled parts
            self._compiled_parts += compiling.compile_detector(self.method.teacher.model, self.compile_mode,
                                                               dynamic=self.cfg.device.get("compile_dynamic", False))

    def best_weights_dir(self) -> None:
        # A continual run writes only inside its run directory: the best epoch (``--handover best``)
        # is the task folder's model_best.ckpt, not upstream's model_best/ under cfg.save_dir.
        return None

    def on_train_epoch_start(self) -> None:
        self.set_loader_epoch()  # no aux head in continual runs, so no epoch-dependent detaching

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        method, context = self.method, self.context
        batch = method.augment_batch(context, batch)  # box replay
        images = batch["img"].shape[0]
        student, batch = method.forward_student(context, self.model, batch)
        self.images_seen += student.preds.shape[0] - images  # samples a method adds (Latent Replay's)
        teacher = method.forward_teacher(batch["img"], student)  # once, shared by every term
        self.mark_phase("forward")
        batch = method.extend_targets(context, self.model, batch, teacher)  # pseudo-labels
        loss, states = method.detection_loss(context, self.model, student, batch)
        for name, term in method.extra_losses(context, self.model, batch, student, teacher).items():
            loss = loss + term
            states[name] = term.detach()
        self.mark_phase("assign_loss")
        return loss, states

    def train_dataloader(self) -> Iterable[dict[str, Any]]:
        # Timed as a part of the start-up: on the GPU path it decodes the task's new images.
        started = time.perf_counter()
        loader = self.at_current_epoch(self.method.train_dataloader(self.context, self.cfg, self.device))
        self.data_seconds += time.perf_counter() - started
        return loader

    def step_capturable(self) -> bool:
        return super().step_capturable() and self.method.step_capturable()

    # Training time survives an interruption: it is carried in the epoch checkpoints.
    def on_train_start(self) -> None:
        super().on_train_start()
        self.train()  # Lightning 2.x leaves modes as they are: put frozen parts in eval here
        self._clock_start = self.fit_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.warmup_seconds is None and self.global_step >= TIMED_WARMUP_STEPS:
            self.warmup_seconds = time.perf_counter() - self._clock_start

    def train_seconds(self) -> float:
        return self._seconds_before_resume + time.perf_counter() - self._clock_start

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._seconds_before_resume = checkpoint.get("train_seconds", 0.0)
