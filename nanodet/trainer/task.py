"""The Lightning module that trains and evaluates a NanoDet detector.

Lightning owns the loop, devices, DDP, precision, gradient clipping, checkpoints, progress bar and
loggers. This module adds what is NanoDet's: the per-step warm-up on top of a per-epoch torch
scheduler chosen by name, the EMA weight averager, and COCO/VOC evaluation of the collected
detections at the end of each validation epoch. Checkpoints keep upstream's layout: the detector
under ``model.`` and its EMA copy under ``avg_model.``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..model.arch import build_model
from ..model.weight_averager import build_weight_averager
from ..util.check_point import save_model_state
from ..util.config import CfgNode
from . import compile as compiling
from .builders import build_train_loader, on_this_device
from .captured_step import CapturedTrainingStep, capturable_optimizer_options, lr_as_tensors, set_learning_rates
from .readout import TrainingReadout
from ..util.io import atomic_write_json
from ..util.logger import get_logger


def set_epoch(loader: Iterable, epoch: int) -> None:
    """``set_epoch`` on whatever part of ``loader`` draws by epoch: a GPU batch loader, a
    DataLoader's sampler or batch sampler."""
    for part in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if callable(getattr(part, "set_epoch", None)):
            part.set_epoch(epoch)


def warmup_factor(step: int, warmup_cfg: CfgNode, warmup_steps: int) -> float:
    """Multiplier of the scheduled learning rate at optimizer step ``step`` (upstream's formulas)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    progress = step / warmup_steps
    ratio = warmup_cfg.ratio
    if warmup_cfg.name == "constant":
        return ratio
    if warmup_cfg.name == "linear":
        return 1.0 - (1.0 - progress) * (1.0 - ratio)
    if warmup_cfg.name == "exp":
        return ratio ** (1.0 - progress)
    raise ValueError(f"schedule.warmup.name: unsupported warm-up '{warmup_cfg.name}'")


def build_optimizer(optimizer_cfg: Mapping[str, Any],
                    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]) -> torch.optim.Optimizer:
    optimizer_cfg = copy.deepcopy(dict(optimizer_cfg))
    name = optimizer_cfg.pop("name")
    return getattr(torch.optim, name)(params, **optimizer_cfg)


def build_lr_scheduler(schedule_cfg: Mapping[str, Any],
                       optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    schedule_cfg = copy.deepcopy(dict(schedule_cfg))
    name = schedule_cfg.pop("name")
    return getattr(torch.optim.lr_scheduler, name)(optimizer, **schedule_cfg)


class TrainingTask(pl.LightningModule):
    """Train, validate and test one detector from a config.

    Args:
        cfg: the loaded config (``nanodet.util.load_config``).
        evaluator: an evaluator over the validation set (``nanodet.evaluator.build_evaluator``);
            without one, validation only collects detections.
        model: an already-built detector, to continue from (default: build from ``cfg.model``).
    """

    def __init__(self, cfg: CfgNode, evaluator: Union[CocoDetectionEvaluator, VOCDetectionEvaluator] | None = None,
                 model: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else build_model(cfg.model)
        self.evaluator = evaluator
        self.weight_averager = None
        self.avg_model = None
        if cfg.model.get("weight_averager"):
            self.weight_averager = build_weight_averager(cfg.model.weight_averager, device=torch.device("cpu"))
            self.avg_model = copy.deepcopy(self.model)
        self.best_metric = -math.inf
        self.last_eval_results: dict = {}
        self._detections: dict = {}
        self._warmup_steps = cfg.schedule.warmup.steps
        self._resumed = False
        self.train_dataset = None  # set it to let the module build its own (GPU) training loader
        self.step_timer = None  # a StepTimer callback sets itself here to receive phase marks
        self.images_seen = 0  # training images (augmented samples) processed, for throughput
        self.compile_mode = compiling.compile_mode(cfg.device.get("compile"))
        self._compiled_parts = []  # restored to plain modules when the fit ends
        self.captured_step: CapturedTrainingStep | None = None  # device.cuda_graph, made at fit start
        self._captures_for = None  # (trainer id, whether its fits capture the step)
        self._scheduled_lr: list[float] = []  # the schedule's learning rates, before the warm-up factor
        self._captured_lr = None  # the first group's rate in the current captured step
        self.readout = TrainingReadout()  # losses to the host without waiting for the GPU

    # ------------------------------------------------------------ optimization mode
    def step_capturable(self) -> bool:
        """Whether this module's training step can be one CUDA graph (subclasses say when not)."""
        return getattr(self.model, "aux_head", None) is None and self.weight_averager is None

    def _captures_step(self) -> bool:
        """``device.cuda_graph`` applies: on one CUDA device (or anywhere with ``always``, where a
        CPU runs the same static steps eagerly), without fp16 loss scaling, for a capturable step.
        Decided once per Trainer (Lightning asks at every batch)."""
        trainer = self._trainer
        if trainer is None:
            return False
        if self._captures_for is None or self._captures_for[0] != id(trainer):
            on_device = on_this_device(self.cfg.device.get("cuda_graph"), trainer.strategy.root_device)
            captures = (on_device and trainer.world_size == 1 and trainer.precision != "16-mixed"
                        and self.step_capturable())
            self._captures_for = (id(trainer), captures)
        return self._captures_for[1]

    @property
    def automatic_optimization(self) -> bool:
        # A captured step runs backward and the optimizer inside its graph: Lightning's manual
        # optimization, in which the module steps the optimizer itself.
        return not self._captures_step()

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("TrainingTask decides its optimization mode from device.cuda_graph")

    # ----------------------------------------------------------------- forward
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and exported: the EMA average when there is one."""
        return self.avg_model if self.avg_model is not None else self.model

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any], batch_idx: int | None = None,
                dataloader_idx: int | None = None) -> dict[int, dict[int, list[list[float]]]]:
        model = self.eval_model
        with compiling.eager():  # evaluation never recompiles a training-compiled model
            preds = model(batch["img"])
        return model.head.post_process(preds, batch)

    # ---------------------------------------------------------------- training
    def train_dataloader(self) -> Iterable[dict[str, Any]]:
        if self.train_dataset is None:
            raise ValueError("TrainingTask: give trainer.fit a train dataloader or set task.train_dataset")
        # The run's seed (the entry point seeds torch); each epoch adds its index (set_loader_epoch).
        loader = build_train_loader(self.train_dataset, self.cfg, self.device, seed=torch.initial_seed() % 2**31)
        return self.at_current_epoch(loader)

    def at_current_epoch(self, loader: Iterable) -> Iterable:
        """``loader`` set to the epoch this fit starts at (a resumed fit's): a DataLoader with
        workers starts drawing its first epoch when Lightning first iterates it, which on resume
        comes before Lightning sets the sampler's epoch. The epoch is the one Lightning gives
        samplers (its processed epochs: after an epoch-end checkpoint ``current_epoch`` still
        counts the finished one until the loop restarts)."""
        set_epoch(loader, self.trainer.fit_loop.epoch_progress.current.processed)
        return loader

    def on_fit_start(self) -> None:
        if on_this_device(self.cfg.device.get("channels_last"), self.device):
            self.to(memory_format=torch.channels_last)
        if self.compile_mode:
            mode = compiling.graph_free_mode(self.compile_mode) if self._captures_step() else self.compile_mode
            self._compiled_parts += compiling.compile_detector(self.model, mode,
                                                               dynamic=self.cfg.device.get("compile_dynamic", False))
        if self.weight_averager is not None:
            self.weight_averager.to(self.device)
            # On resume the checkpoint's average is the one to continue, not the raw weights.
            self.weight_averager.load_from(self.avg_model if self._resumed else self.model)

    def on_train_start(self) -> None:
        # A warm-up longer than the whole run is never what a user meant. Asked here, not at fit
        # start: the count builds the training loader, which must see a resumed fit's epoch.
        total = self.trainer.estimated_stepping_batches
        if math.isfinite(total):
            self._warmup_steps = min(self.cfg.schedule.warmup.steps, int(total))
        if self._captures_step():
            optimizer = self.trainer.optimizers[0]
            height, width = self.cfg.data.train.input_size[::-1]
            self.captured_step = CapturedTrainingStep(
                self.compute_loss, optimizer, self.trainable_parameters(), self.cfg.grad_clip,
                canvas=(height, width), use_graphs=self.device.type == "cuda")
            # The schedule's rates as the optimizer holds them (a resumed fit: its checkpoint's).
            self._scheduled_lr = [float(group["lr"]) for group in optimizer.param_groups]

    def on_train_end(self) -> None:
        self._write_readings(wait=True)  # the steps still on their way to the logger

    def on_fit_end(self) -> None:
        # The model leaves every fit as plain modules (the next task's teacher is copied from it).
        compiling.restore(self._compiled_parts)
        self._compiled_parts = []
        self.captured_step = None

    def on_train_epoch_start(self) -> None:
        self.set_loader_epoch()
        self.model.set_epoch(self.current_epoch)

    def set_loader_epoch(self) -> None:
        """Tell the training loader which epoch starts (Lightning tells only a DataLoader's
        sampler, not a GPU batch loader nor a batch sampler), so a resumed fit draws the batches
        the interrupted one would have drawn."""
        set_epoch(self.trainer.train_dataloader, self.current_epoch)

    def mark_phase(self, phase: str) -> None:
        """End of a phase of the training step, for a StepTimer when one is attached (not inside
        a captured step, whose phases run as one graph)."""
        if self.step_timer is not None and self.captured_step is None:
            self.step_timer.mark(phase)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and its named parts for one batch; continual-learning methods extend this."""
        if getattr(self.model, "aux_head", None) is not None:  # the AGM's forward and loss are one
            _, loss, loss_states = self.model.forward_train(batch)
        else:
            preds = self.model(batch["img"])
            self.mark_phase("forward")
            loss, loss_states = self.model.head.loss(preds, batch)
        self.mark_phase("assign_loss")
        return loss, loss_states

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        step = self.global_step  # a captured step advances the counter itself
        if self.captured_step is not None:
            loss, loss_states = self._captured_training_step(batch)
        else:
            compiling.mark_step_begin(self.compile_mode)
            loss, loss_states = self.compute_loss(batch)
        self.images_seen += batch["img"].shape[0]
        self._read_out(step, batch_idx, loss, loss_states)
        return loss

    def _read_out(self, step, batch_idx, loss, loss_states):
        """This step's scalars to the progress bar, the logger and the log line, through the
        readout, never by reading a device tensor here (``TrainingReadout`` says why)."""
        if self.trainer.progress_bar_callback is not None:
            self.readout.watch(step, {"loss": loss})
        # The logger writes every log.interval steps, so only those steps are read out.
        to_logger = (step + 1) % self.cfg.log.interval == 0
        to_line = step % self.cfg.log.interval == 0 and self.trainer.is_global_zero
        if to_logger or to_line:
            self.readout.request(step, loss_states, lr=self._current_lr(), to_logger=to_logger, to_line=to_line,
                                 epoch=self.current_epoch, batch=batch_idx)
        self._write_readings()

    def _write_readings(self, wait: bool = False):
        for reading in self.readout.landed(wait=wait):
            context = reading.context
            if context["to_logger"]:
                scalars = {**{f"train/{k}": v for k, v in reading.values.items()}, "train/lr": context["lr"]}
                for logger in self.loggers:
                    logger.log_metrics(scalars, step=reading.step)
            if context["to_line"]:
                self._log_train_line(reading)

    def _captured_training_step(self, batch):
        """One optimizer step as a graph replay, with the warm-up's learning rate; Lightning's
        step count advances as its own optimizer step would advance it."""
        optimizer = self.optimizers()
        factor = warmup_factor(self.global_step, self.cfg.schedule.warmup, self._warmup_steps)
        rates = [lr * factor for lr in self._scheduled_lr]
        set_learning_rates(optimizer.optimizer, rates)
        self._captured_lr = rates[0]
        optimizer._on_before_step()  # the step counters of Lightning's manual optimization
        loss, loss_states = self.captured_step(batch)
        optimizer._on_after_step()
        if self.step_timer is not None:
            self.step_timer.mark("captured_step")
        return loss, loss_states

    def on_train_epoch_end(self) -> None:
        if self.automatic_optimization:
            return
        # Manual optimization steps the schedule itself, once per epoch as the config says.
        # The schedule's arithmetic runs on host numbers: the groups' device tensors are set aside
        # while it steps, then given its rates (reading a tensor would wait for the GPU).
        optimizer = self.trainer.optimizers[0]
        rates_on_device = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self._scheduled_lr):
            group["lr"] = lr
        self.lr_schedulers().step()
        self._scheduled_lr = [float(group["lr"]) for group in optimizer.param_groups]
        for group, rate in zip(optimizer.param_groups, rates_on_device):
            group["lr"] = rate
        set_learning_rates(optimizer, self._scheduled_lr)

    def _log_train_line(self, reading):
        parts = "| ".join(f"{k}:{v:.4f}" for k, v in reading.values.items())
        get_logger().info(
            "Train|Epoch%d/%d|Iter%d(%d/%d)| lr:%.2e| %s",
            reading.context["epoch"] + 1, self.trainer.max_epochs, reading.step, reading.context["batch"] + 1,
            self.trainer.num_training_batches, reading.context["lr"], parts,
        )

    def _current_lr(self) -> float:
        if self.captured_step is not None:  # the groups hold device tensors: the rate they were given
            return self._captured_lr
        # training_step runs inside the optimizer's closure, where the warm-up is already applied.
        return self.trainer.optimizers[0].param_groups[0]["lr"]

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer,
                       optimizer_closure: Callable[[], Any] | None = None) -> None:
        # The warm-up scales the scheduler's learning rate for this step only, so the
        # scheduler's own (possibly recursive) state is never disturbed.
        factor = warmup_factor(self.global_step, self.cfg.schedule.warmup, self._warmup_steps)
        if factor == 1.0:
            optimizer.step(closure=optimizer_closure)
            return
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr * factor
        optimizer.step(closure=optimizer_closure)
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.weight_averager is not None:
            self.weight_averager.update(self.model, self.global_step)
            if batch_idx + 1 == self.trainer.num_training_batches:
                # Checkpoint callbacks run at epoch end, before module hooks: refresh now so
                # ``avg_model.`` in the saved file is the current average.
                self.weight_averager.apply_to(self.avg_model)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # The Trainer gets no gradient_clip_val (manual optimization refuses one: a captured step
        # clips inside its graph), so the config's is applied here, as Lightning would.
        if self.cfg.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer_cfg = self.cfg.schedule.optimizer
        graphs = self._captures_step() and self.device.type == "cuda"
        if graphs:
            optimizer_cfg = {**dict(optimizer_cfg),
                             **capturable_optimizer_options(getattr(torch.optim, optimizer_cfg.name))}
        optimizer = build_optimizer(optimizer_cfg, self.trainable_parameters())
        scheduler = build_lr_scheduler(self.cfg.schedule.lr_schedule, optimizer)
        if graphs:  # after the scheduler, whose base rates stay host numbers
            lr_as_tensors(optimizer, self.device)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._detections = {}
        if self.weight_averager is not None:
            self.weight_averager.apply_to(self.avg_model)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._detections.update(self.predict(batch))

    def on_validation_epoch_end(self) -> None:
        results = self._evaluate_collected()
        if results is None:
            return
        scalars = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
        self.log_dict({f"val/{k}": v for k, v in scalars.items()}, logger=True, sync_dist=False)
        save_key = self.cfg.evaluator.save_key
        if save_key not in scalars:
            get_logger().warning("evaluator.save_key '%s' is not among the metrics %s", save_key, sorted(scalars))
            return
        if self.trainer.is_global_zero:
            get_logger().info(
                "Val|Epoch%d| %s", self.current_epoch + 1,
                "| ".join(f"{k}:{v:.4f}" for k, v in scalars.items()),
            )
            if scalars[save_key] > self.best_metric:
                self.best_metric = scalars[save_key]
                best_dir = self.best_weights_dir()
                if best_dir is not None:
                    save_model_state(best_dir / "nanodet_model_best.pth", self.eval_model)
                    atomic_write_json(best_dir / "eval_results.json", {"epoch": self.current_epoch + 1, **results})

    def best_weights_dir(self) -> Path | None:
        """Where the best epoch's plain weights and metrics go (upstream's ``model_best/``), or None."""
        return Path(self.cfg.save_dir) / "model_best"

    def _evaluate_collected(self):
        """Gather detections from every rank, evaluate on rank 0, share the metrics with all."""
        detections = self._detections
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, detections)
            detections = {k: v for part in gathered for k, v in part.items()}
        results = None
        if self.evaluator is not None and self.trainer.is_global_zero:
            results = self.evaluator.evaluate(detections)
        results = self.trainer.strategy.broadcast(results, src=0)
        self.last_eval_results = results or {}
        self._detections = {}
        return results

    # -------------------------------------------------------------------- test
    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._detections.update(self.predict(batch))

    def on_test_epoch_end(self) -> None:
        results = self._evaluate_collected()
        if results is not None and self.trainer.is_global_zero:
            atomic_write_json(Path(self.cfg.save_dir) / "eval_results.json", results)

    # -------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cfg"] = self.cfg.to_dict() if hasattr(self.cfg, "to_dict") else dict(self.cfg)
        checkpoint["best_metric"] = self.best_metric
        checkpoint["images_seen"] = self.images_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_metric = checkpoint.get("best_metric", -math.inf)
        self.images_seen = checkpoint.get("images_seen", 0)
        self._resumed = True
