"""Everything a training run needs besides the module: devices, data loaders, the Trainer."""

from __future__ import annotations

import functools
import gc
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from ..data.collate import collate_and_pad
from ..data.seeded_sampling import SeededBatches, SeededSampler
from ..util.cli import parse_device
from ..util.config import PRECISIONS, CfgNode
from ..util.logger import get_logger


def limit_host_threads(threads: int, accelerator: str) -> None:
    """``device.host_threads``: on a GPU, this process's intra-op threads (0: leave PyTorch's).

    On a CPU the process is the trainer and keeps every core.
    """
    if accelerator == "gpu" and threads > 0:
        torch.set_num_threads(threads)


def resolve_devices(gpu_ids: int | Sequence[int] | None,
                    device: str | None = None) -> tuple[str, int | list[int]]:
    """(accelerator, devices) from the config's ``device.gpu_ids`` or a ``--device`` string.

    ``--device`` accepts ``cpu``, ``cpu:N`` (N processes under DDP with the gloo backend, e.g.
    to test multi-device runs without GPUs), ``cuda`` (all GPUs), ``cuda:0`` or ``cuda:0,1``
    (read by ``nanodet.util.cli.parse_device``, the one parser of every command). A request for
    GPUs on a machine without CUDA falls back to the CPU with a warning, so a config written for
    a GPU server still runs on a laptop.
    """
    request = parse_device(device)
    if request is not None:
        if request.kind == "cpu":
            return "cpu", request.processes
        if request.gpu_ids is None:
            gpu_ids = list(range(max(torch.cuda.device_count(), 1)))
        else:
            gpu_ids = list(request.gpu_ids)
    if gpu_ids is None or gpu_ids == -1 or gpu_ids == [] or gpu_ids == [-1]:
        return "cpu", 1
    if isinstance(gpu_ids, int):
        gpu_ids = [gpu_ids]
    if not torch.cuda.is_available():
        get_logger().warning("GPU %s requested but CUDA is not available: training on the CPU", list(gpu_ids))
        return "cpu", 1
    available = torch.cuda.device_count()
    usable = [i for i in gpu_ids if i < available]
    if len(usable) < len(gpu_ids):
        get_logger().warning("GPU %s requested but only %d visible: using %s", list(gpu_ids), available, usable or [0])
    return "gpu", usable or [0]


def inference_device(name: str | None = None) -> torch.device:
    """The one device a command that runs on one device (evaluation, inference, a benchmark)
    uses: ``--device`` read as the training commands read it (``cuda:0,1`` takes the first; a GPU
    asked for on a machine without one: a warning and the CPU), or CUDA when there is one."""
    accelerator, devices = resolve_devices(None, name or ("cuda" if torch.cuda.is_available() else "cpu"))
    return torch.device(f"cuda:{devices[0]}" if accelerator == "gpu" else "cpu")


def resolve_precision(precision: int | str, accelerator: str) -> str:
    """Lightning's precision for ``device.precision`` on ``accelerator`` ("gpu" or "cpu"). ``auto``,
    the default: bf16 autocast on a GPU that has it, fp32 on a CPU (today's path there)."""
    if precision == "auto":
        bf16 = accelerator == "gpu" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16-mixed" if bf16 else "32-true"
    if precision not in PRECISIONS:
        raise ValueError(f"device.precision: expected auto, 32, 16 or bf16; got {precision!r}")
    resolved = PRECISIONS[precision]
    if accelerator == "cpu" and resolved == "16-mixed":
        get_logger().warning("fp16 mixed precision needs a GPU: using bf16-mixed on the CPU")
        return "bf16-mixed"
    return resolved


def on_this_device(setting: bool | str | None, device: torch.device | str) -> bool:
    """Whether a fast-path switch (``device.gpu_augment``, ``channels_last``, ``cuda_graph``) is on
    for ``device``: ``true`` on a CUDA device only, so a CPU keeps the reference path;
    ``always`` on a CPU too (to check there that both paths train alike)."""
    return setting == "always" or (bool(setting) and torch.device(device).type == "cuda")


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def build_dataloader(dataset: torch.utils.data.Dataset, cfg: CfgNode, train: bool, batch_size: int | None = None,
                     num_workers: int | None = None, batch_sampler: Iterable[Sequence[int]] | None = None,
                     seed: int = 0) -> torch.utils.data.DataLoader:
    """A loader with the config's batch size and workers; ``batch_sampler`` replaces both
    the batch size and the shuffling (replay draws its own batches). A training loader's epochs,
    order and augmentation alike, follow from (seed, epoch) alone (nanodet/data/seeded_sampling.py),
    so a resumed fit trains on the batches an uninterrupted one would have; it shards itself under
    DDP (the Trainer injects no sampler)."""
    batch_size = batch_size or cfg.device.batchsize_per_gpu
    num_workers = cfg.device.workers_per_gpu if num_workers is None else num_workers
    if batch_sampler is not None:
        batching = {"batch_sampler": SeededBatches(batch_sampler, seed) if train else batch_sampler}
    elif not train:
        batching = {"batch_size": batch_size, "shuffle": False, "drop_last": False}
    else:
        rank, world = distributed_rank()
        # Dropping a ragged last batch only makes sense when there is more than one batch.
        batching = {"sampler": SeededSampler(len(dataset), seed, rank=rank, world_size=world),
                    "batch_size": batch_size, "drop_last": len(dataset) > batch_size}
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        collate_fn=functools.partial(collate_and_pad, divisible=32),
        **batching,
    )


def build_train_loader(dataset: torch.utils.data.Dataset, cfg: CfgNode, device: torch.device,
                       batch_size: int | None = None, seed: int = 0,
                       batch_sampler: Iterable[Sequence[int]] | None = None) -> Iterable[dict[str, Any]]:
    """The training batches: augmented on the GPU when ``device.gpu_augment`` is on and the
    device is a GPU (images decoded once, kept as uint8 on the GPU, warped and coloured there in
    batch), otherwise the CPU pipeline in DataLoader workers. ``gpu_augment: always`` takes the
    batch augmentation on a CPU too, to check on one that both paths train alike. ``batch_sampler``
    (lists of dataset indices) replaces the shuffled order on either path."""
    batch_size = batch_size or cfg.device.batchsize_per_gpu
    if not on_this_device(cfg.device.get("gpu_augment"), device):
        return build_dataloader(dataset, cfg, train=True, batch_size=batch_size, batch_sampler=batch_sampler,
                                seed=seed)
    from ..data.gpu_augment import DecodedImageCache, GpuBatchAugment, GpuBatchLoader

    rank, world = distributed_rank()
    cache = DecodedImageCache(dataset, device=device, workers=max(cfg.device.workers_per_gpu, 1))
    augment = GpuBatchAugment(dataset.pipeline_cfg, dataset.input_size, dataset.keep_ratio, device=device,
                              channels_last=on_this_device(cfg.device.get("channels_last"), device))
    return GpuBatchLoader(cache, augment, batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                          seed=seed, rank=rank, world_size=world, batch_sampler=batch_sampler)


class RunDirCheckpoint(ModelCheckpoint):
    """A checkpoint in the run's own directory, beside its log and config (upstream's layout):
    Lightning's warning that the directory is not empty would then greet every run.

    That layout is the choice which provokes the warning, and it is kept on purpose: train.log and
    train_cfg.yml are written before the fit, model_last.ckpt is overwritten in place and read back
    by ``--resume``. So these callbacks alone skip the check (a user's own ModelCheckpoint still
    warns); no Trainer or callback argument turns it off."""

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath: str | Path) -> None:  # Lightning's private check
        pass


class LastEpochCheckpoint(RunDirCheckpoint):
    """model_last.ckpt after a training epoch, for resuming: written once ``min_interval`` seconds
    have passed since the last write (0: after every epoch), and always after the run's last epoch.

    A write stops training while the host copies some 1,600 tensors from the GPU and pickles them
    (90 ms for NanoDet-Plus-m and its AdamW state on the project's CPU machine). With epochs of a
    second or two, as on small data sets on a GPU, writing after every epoch could cost up to a
    tenth of the training time; an interruption now loses at most ``min_interval`` seconds.
    """

    def __init__(self, dirpath: str | Path, min_interval: float = 0.0) -> None:
        if min_interval < 0:
            raise ValueError(f"schedule.checkpoint_interval must be >= 0 seconds, got {min_interval}")
        super().__init__(dirpath=dirpath, filename="model_last", save_top_k=1, enable_version_counter=False,
                         save_on_train_epoch_end=True)
        self.min_interval = min_interval
        self._written_at = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._written_at = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = (trainer.current_epoch + 1 >= trainer.max_epochs or trainer.should_stop
                      or 0 <= trainer.max_steps <= trainer.global_step)
        due = last_epoch or time.monotonic() - self._written_at >= self.min_interval
        # Every DDP process must take the same decision: saving includes a barrier.
        if trainer.strategy.broadcast(due, src=0):
            super().on_train_epoch_end(trainer, pl_module)
            self._written_at = time.monotonic()


class LossProgressBar(TQDMProgressBar):
    """Lightning's progress bar with the newest training loss of the module's ``readout``
    (nanodet/trainer/readout.py), which never waits for the GPU; a loss logged for the bar would
    be turned into a number after every batch, waiting for the GPU each time."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | float | str]:
        metrics = super().get_metrics(trainer, pl_module)
        readout = getattr(pl_module, "readout", None)
        reading = readout.newest() if readout is not None else None
        if reading is not None and "loss" in reading.values:
            metrics["loss"] = round(reading.values["loss"], 4)
        return metrics


class FreezeLongLivedObjects(pl.Callback):
    """Keep Python's full garbage collections short while a fit trains: after its first
    ``after_steps`` steps, one collection, then ``gc.freeze()``.

    A full collection walks every tracked object: about 0.4 M with torch and a data set loaded
    (0.17 s on this project's CPU machine), and far more once torch.compile and CUDA graphs have
    run (a collection after compiling took 1.5 s on an H200's host), while the GPU waits. What
    exists after the first steps (compiled code, graphs, caches) lives as long as the fit, so it
    is collected once and frozen: later collections, automatic as usual, walk only what training
    creates. The fit's end, or failure, unfreezes it, so what a fit leaves behind (a teacher's
    compiled code) can be collected. Turning automatic collection off instead only postpones the
    walk: the first collection then paid for everything at once (docs/benchmark.md).
    """

    def __init__(self, after_steps: int = 3) -> None:
        self.after_steps = after_steps
        self.froze = False
        self.frozen_objects = 0  # how many objects the freeze took out of the collector's sight
        self.collect_seconds = 0.0  # the one collection before it
        self._steps = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1  # counted per fit, so a resumed fit freezes after its own first steps
        if self._steps == self.after_steps:
            started = time.perf_counter()
            gc.collect()
            self.collect_seconds = time.perf_counter() - started
            gc.freeze()
            self.froze, self.frozen_objects = True, gc.get_freeze_count()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._unfreeze()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._unfreeze()

    def _unfreeze(self):
        if self.froze:
            gc.unfreeze()
        self.froze = False


class _DropLightningTip(logging.Filter):
    """Lightning's advertisement for its cloud logger (litlogger), printed at every Trainer's start."""

    TIP = "💡 Tip: For seamless cloud logging"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.TIP)


def quiet_lightning() -> None:
    """Silence what Lightning prints because of this toolkit's own choices and not for a user, where
    no argument of ours avoids it (each the one message, nothing else):

    * the litlogger tip: Lightning logs it whenever no LitLogger is among the loggers, even with
      ``logger=False``. (Its litmodels tip is avoided at its cause: every Trainer here gets our own
      ModelCheckpoint, so Lightning never adds its default one, which is what prints that tip.)
    * torch 2.10+'s deprecation of ``LeafSpec``, raised inside Lightning's own pytree helper
      (``pytorch_lightning.utilities._pytree``, which CombinedLoader calls on every fit's loaders):
      only the warnings raised from that module are ignored, not those of other code.
    """
    rank_zero_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTip) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_DropLightningTip())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")


def build_trainer(cfg: CfgNode, save_dir: str | Path, max_epochs: int | None = None, device: str | None = None,
                  callbacks: Iterable[pl.Callback] = (), enable_progress_bar: bool = True,
                  val_every_n_epochs: int | None = None, logger: bool = True, save_best: bool = True,
                  max_steps: int = -1, freeze_gc: bool = True) -> pl.Trainer:
    """A Lightning Trainer set up from the config: devices, precision, clipping, checkpoints, logs.

    ``save_best`` keeps model_best.ckpt by the validation metric; runs that never validate turn
    it off. model_last.ckpt, for resuming, is written after an epoch (``LastEpochCheckpoint``:
    at most every ``schedule.checkpoint_interval`` seconds, and after the last). ``max_steps`` ends
    the run early (benchmarks). ``freeze_gc`` freezes the objects that exist after the first
    steps, so Python's full collections stay short (``FreezeLongLivedObjects`` says why).
    """
    save_dir = Path(save_dir)
    quiet_lightning()
    accelerator, devices = resolve_devices(cfg.device.gpu_ids, device)
    limit_host_threads(cfg.device.host_threads, accelerator)
    n_devices = devices if isinstance(devices, int) else len(devices)
    last = LastEpochCheckpoint(save_dir, min_interval=cfg.schedule.checkpoint_interval)
    best = RunDirCheckpoint(dirpath=save_dir, filename="model_best", monitor=f"val/{cfg.evaluator.save_key}",
                           mode="max", save_top_k=1, enable_version_counter=False)
    all_callbacks = [last, best] if save_best else [last]
    all_callbacks += [*([FreezeLongLivedObjects()] if freeze_gc else []), *callbacks]
    if enable_progress_bar:
        all_callbacks.append(LossProgressBar(refresh_rate=10))
    return pl.Trainer(
        default_root_dir=save_dir,
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if n_devices > 1 else "auto",
        precision=resolve_precision(cfg.device.precision, accelerator),
        max_epochs=max_epochs or cfg.schedule.total_epochs,
        max_steps=max_steps,
        check_val_every_n_epoch=val_every_n_epochs or cfg.schedule.val_intervals,
        # No gradient_clip_val: TrainingTask clips with cfg.grad_clip itself (a captured step
        # inside its graph), because Lightning refuses one under manual optimization.
        # Training scalars reach the logger through the module's readout, every log.interval
        # steps across epochs; Lightning's own per-step logging has nothing left to write.
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        callbacks=all_callbacks,
        use_distributed_sampler=False,  # build_dataloader and the GPU loader shard themselves
        logger=TensorBoardLogger(save_dir, name="tensorboard", version="") if logger else False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        benchmark=accelerator == "gpu" and cfg.device.cudnn_benchmark,
    )
