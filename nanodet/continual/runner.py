"""The task-sequence runner: train each task, hand the weights over, evaluate, report, resume.

One run directory per run (default ``runs/<config>/<scenario>/<method>/``):

    run.json                 the run's settings; a re-run with other settings is refused
    task_<t>/model.pth       the student's weights after task t (upstream's plain format)
    task_<t>/eval.json       the evaluation after task t
    task_<t>/done.json       written last: task t is finished
    task_<t>/model_last.ckpt epoch checkpoint while task t trains (removed when it is done)
    task_<t>/trained.json    task t trained and its test detections saved (detections.npz),
                             its scores not yet in (both removed when it is done)
    results.json, results.md, map_per_task.png

Re-running the same command resumes: finished tasks are skipped, a trained task is scored from its
saved detections, an interrupted task continues from its last epoch checkpoint. Every file is
written atomically.

On a GPU a task's scores (COCO and VOC metrics, seconds of host time) are computed in a worker
process while the next task trains (``scoring.TaskScorer``), so a task's summary line comes when
the next task has trained.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from .. import evaluator as evaluator_package
from ..evaluator import CocoDetectionEvaluator
from ..model.arch import build_model
from ..model.backbone import check_pretrained_weights
from ..trainer.builders import build_dataloader, build_trainer, resolve_devices
from ..trainer.evaluate import EvalImages, predict_detections
from ..util.check_point import CheckpointError, load_model_weight, read_checkpoint, save_model_state
from ..util.config import config_name
from ..util.io import atomic_write_json
from ..util.logger import get_logger, run_log
from .data import TaskData
from .methods.base import ContinualMethod, TaskContext
from .report import write_reports
from .results import build_results, read_task_entry, task_entry
from .scoring import TaskScorer, ground_truth_of, load_detections, save_detections
from .scenario import Scenario
from .task import ContinualTask

if TYPE_CHECKING:
    from ..util.config import CfgNode


def is_rank_zero() -> bool:
    """Rank 0 of a DDP run (Lightning's launcher sets the rank of the others' environment)."""
    return rank_zero_only.rank == 0


def wait_for_rank_zero() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class RunError(RuntimeError):
    """A run directory that cannot be resumed as asked."""


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """An exclusive lock on a run directory while a run uses it, so that a second process on the
    same directory stops at once with who holds it (POSIX ``flock``, released with the process
    however it ends; no lock where the platform has none)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if not enabled or fcntl is None:
        yield
        return
    with open(run_dir / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RunError(f"{run_dir} is in use by {holder}: wait for it to end, or give another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def default_run_dir(cfg: CfgNode, scenario: Scenario, method: ContinualMethod) -> Path:
    return Path("runs") / config_name(cfg) / scenario.name / method.run_name()


def check_continual_config(cfg: CfgNode) -> None:
    arch = cfg.model.arch
    if arch.get("aux_head"):
        raise RunError("continual runs use the paper's model without the auxiliary head: "
                       "remove model.arch.aux_head from the config")
    if cfg.model.get("weight_averager"):
        raise RunError("continual runs do not use an EMA weight averager: remove model.weight_averager")


class PendingScores(NamedTuple):
    """A trained task waiting for its scores: its folder, the scorer's future, its entry so far."""

    task_dir: Path
    future: Future
    entry: dict


class ContinualRunner:
    def __init__(self, cfg: CfgNode, scenario: Scenario, method: ContinualMethod, run_dir: str | Path | None = None,
                 seed: int = 1234, device: str | None = None, restart: bool = False, handover: str = "last",
                 progress_bar: bool = True, callbacks: Iterable[pl.Callback] = (), base_model: str | Path | None = None,
                 background_scoring: bool | None = None):
        if handover not in ("last", "best"):
            raise ValueError(f"handover must be 'last' or 'best', got {handover!r}")
        check_continual_config(cfg)
        self.cfg = cfg
        self.scenario = scenario
        self.method = method
        self.run_dir = Path(run_dir) if run_dir else default_run_dir(cfg, scenario, method)
        self.seed = seed
        self.device = device
        self.restart = restart
        self.handover = handover
        self.progress_bar = progress_bar
        self.callbacks = list(callbacks)  # extra Lightning callbacks for every task's Trainer
        # Scores in a worker process while the next task trains (None: on a GPU, not on a CPU).
        self.background_scoring = background_scoring
        # Task 0 taken from this model instead of trained, so that methods start from one base.
        self.base_model = Path(base_model) if base_model else None
        if self.base_model is not None and not self.base_model.is_file():
            raise RunError(f"--base-model {self.base_model}: no such file (give a task_0/model.pth "
                           "of an earlier run, or any plain state dict of this config's model)")
        check_pretrained_weights(cfg.model.arch.backbone)  # a missing weights file, before any data is read
        self.logger = get_logger()
        self._eval_images = None  # EvalImages of the test split, made at the first evaluation

    # ------------------------------------------------------------------ run settings
    def settings(self) -> dict:
        return {
            "config": self.cfg.get("config_path"),
            "config_name": config_name(self.cfg),
            "scenario": self.scenario.name,
            "tasks": [self.scenario.names(group) for group in self.scenario.tasks],
            "method": self.method.describe(),
            "seed": self.seed,
            "handover": self.handover,
            "epochs_per_task": self.cfg.schedule.total_epochs,
            "base_model": str(self.base_model) if self.base_model else None,
            "cfg": self.cfg.to_dict(),
        }

    def _prepare_run_dir(self):
        """Check the directory's settings against ours (under the run's lock); run.json itself is
        written once the run has really started (``_mark_started``), so a failed start never
        blocks a corrected re-run."""
        if not is_rank_zero():  # other DDP ranks only follow rank 0's directory
            return
        if self.restart:
            self.logger.info("--restart: removing what %s holds", self.run_dir)
            for child in self.run_dir.iterdir():
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        marker = self.run_dir / "run.json"
        if marker.is_file():
            settings, previous = self._settings_json(), json.loads(marker.read_text())
            differing = sorted(k for k in set(settings) | set(previous)
                               if settings.get(k) != previous.get(k) and k != "config")
            if differing:
                raise RunError(
                    f"{self.run_dir} holds a run with other settings (they differ in: {', '.join(differing)}); "
                    f"re-run with --restart to start over, or --out to use another directory"
                )

    def _settings_json(self) -> dict:
        return json.loads(json.dumps(self.settings(), default=str))

    def _mark_started(self):
        marker = self.run_dir / "run.json"
        if is_rank_zero() and not marker.is_file():
            atomic_write_json(marker, self._settings_json())

    # ------------------------------------------------------------------ the sequence
    def run(self) -> dict:
        with run_dir_lock(self.run_dir, enabled=is_rank_zero()):
            self._prepare_run_dir()
            # The evaluators' full tables go to run.log; the console shows one summary a task.
            with run_log(self.run_dir / "run.log", hidden=(evaluator_package.__name__,)):
                return self._run()

    def _run(self) -> dict:
        accelerator, devices = resolve_devices(self.cfg.device.gpu_ids, self.device)
        eval_device = torch.device(f"cuda:{devices[0]}" if accelerator == "gpu" else "cpu")
        # Epoch selection (--handover best) holds out validation images; the paper's last-epoch
        # hand-over trains on every training image.
        fraction = float(self.cfg.data.get("validation_fraction", 0.1)) if self.handover == "best" else 0.0
        data = TaskData(self.cfg, self.scenario, validation_fraction=fraction, seed=self.seed)
        data.full_train, data.full_val  # every image a run reads, checked before anything trains
        self._mark_started()
        pl.seed_everything(self.seed, workers=True, verbose=False)  # the initial weights too
        model = build_model(self.cfg.model)
        entries = []
        self.logger.info("%s | method %s | run dir %s", self.scenario.describe(), self.method.name, self.run_dir)
        background = self.background_scoring if self.background_scoring is not None else eval_device.type == "cuda"
        scorer = TaskScorer(background=background and is_rank_zero(), log_file=self.run_dir / "run.log")
        scoring = None  # PendingScores of the task scored while the next one trains
        try:
            for t in range(len(self.scenario)):
                task_dir = self.run_dir / f"task_{t}"
                if (task_dir / "done.json").is_file():
                    entries.append(read_task_entry(task_dir / "eval.json"))
                    self.logger.info("task %d already done: skipped (mAP %.4f)", t, entries[-1]["mAP"])
                    continue
                if (task_dir / "trained.json").is_file() and (task_dir / "detections.npz").is_file():
                    if is_rank_zero():
                        self.logger.info("task %d already trained: scoring its saved detections", t)
                        pending = self._score(scorer, t, task_dir, data.eval_dataset(t),
                                              load_detections(task_dir / "detections.npz"),
                                              json.loads((task_dir / "trained.json").read_text()))
                else:
                    pending = self._train_task(t, task_dir, data, model, eval_device, scorer)
                if not is_rank_zero():
                    continue  # evaluation and reports are rank 0's
                if scoring is not None:  # scored while this task trained
                    self._record(scoring, entries)
                scoring = pending
                if scoring.future.done():  # scored in place: recorded at once
                    self._record(scoring, entries)
                    scoring = None
            if scoring is not None:
                self._record(scoring, entries)
        finally:
            scorer.close()
        if not is_rank_zero():
            return {}
        results = build_results(self.settings(), self.scenario, entries, finished=True)
        write_reports(self.run_dir, results)
        self.logger.info("finished: %s holds results.md (the tables), map_per_task.png, results.json and "
                         "run.log (every evaluation in full)", self.run_dir)
        return results

    def _record(self, pending, entries):
        """Wait for a task's scores, write its evaluation and mark it done, report."""
        entry = self._finish(pending)
        entries.append(entry)
        results = build_results(self.settings(), self.scenario, entries, finished=len(entries) == len(self.scenario))
        write_reports(self.run_dir, results)
        self._print_summary(entry, results)

    def _train_task(self, t: int, task_dir: Path, data: TaskData, model, eval_device, scorer):
        task_started = time.perf_counter()
        task_dir.mkdir(parents=True, exist_ok=True)
        wait_for_rank_zero()  # under DDP, rank 0 has written the previous task's files
        if t > 0:  # hand-over: the previous task's weights (and the method's stored state)
            load_model_weight(model, self.run_dir / f"task_{t - 1}" / "model.pth", strict=True)
            self.method.load_state(self.run_dir / f"task_{t - 1}")
        train_dataset = data.train_dataset(t)
        if len(train_dataset) == 0:
            raise RunError(f"task {t} ({self.scenario.names(self.scenario.new_classes(t))}) has no training images")
        context = TaskContext(t, self.scenario, self.cfg, train_dataset=train_dataset, task_dir=task_dir,
                              seed=self.seed)
        pl.seed_everything(self.seed + t, workers=True, verbose=False)
        eval_dataset = data.eval_dataset(t)
        if t == 0 and self.base_model is not None:
            load_model_weight(model, self.base_model, strict=True)
            self.method.on_task_start(context, model)
            self.logger.info("task 0: the base model %s, not trained (%d images)", self.base_model, len(train_dataset))
            trained = {"epochs": 0, "train_seconds": 0.0, "train_img_per_s": None, "base_model": str(self.base_model)}
        else:
            self.method.on_task_start(context, model)
            selection = data.validation_dataset(t) if self.handover == "best" else None
            if selection is not None and len(selection) == 0:
                self.logger.warning("task %d: no validation image holds a class seen so far "
                                    "(data.validation_fraction): it hands over its last epoch", t)
                selection = None
            trained = self._fit(t, task_dir, context, model, selection, task_started)
        self.method.on_task_end(context, model)
        if not is_rank_zero():  # DDP kept every rank's weights equal; rank 0 writes and evaluates
            return None
        self.method.save_state(task_dir)
        save_model_state(task_dir / "model.pth", model)

        start = time.perf_counter()
        detections = self._predict(model, data, eval_dataset, eval_device)
        trained.update(
            train_images=len(train_dataset),
            eval_seconds=round(time.perf_counter() - start, 2),  # inference; scoring is timed apart
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            parameters_in_memory=self.method.parameters_in_memory(model),
            buffer_bytes=self.method.buffer_bytes(),
        )
        # Trained and predicted: a run interrupted from here on only scores the saved detections.
        save_detections(task_dir / "detections.npz", detections)
        atomic_write_json(task_dir / "trained.json", trained)
        return self._score(scorer, t, task_dir, eval_dataset, detections, trained)

    def _score(self, scorer, t: int, task_dir: Path, eval_dataset, detections, trained: dict) -> PendingScores:
        """Hand task t's detections to the scorer."""
        scenario = self.scenario
        old, new = scenario.names(scenario.old_classes(t)), scenario.names(scenario.new_classes(t))
        future = scorer.submit(ground_truth_of(eval_dataset), detections, scenario.seen_classes(t), old, new)
        head = {"task": t, "new_classes": new, "old_classes": old,
                "seen_classes": scenario.names(scenario.seen_classes(t)),
                "eval_images": len(eval_dataset)}
        return PendingScores(task_dir, future, {**head, **trained})

    def _finish(self, pending: PendingScores) -> dict:
        """Task t's entry once its scores are in; eval.json, then done.json (written last)."""
        task_dir = pending.task_dir
        entry = task_entry(pending.entry, pending.future.result())  # the values as read back from disk
        atomic_write_json(task_dir / "eval.json", entry)
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        atomic_write_json(task_dir / "done.json", {"task": entry["task"], "finished": finished})
        for leftover in ("model_last.ckpt", "model_best.ckpt", "detections.npz", "trained.json"):
            (task_dir / leftover).unlink(missing_ok=True)
        return entry

    def _fit(self, t: int, task_dir: Path, context: TaskContext, model, selection_dataset, task_started: float) -> dict:
        """Train task t with Lightning (resuming an interrupted fit), validating on
        ``selection_dataset`` when there is one (--handover best); how long it took: start-up
        (from the task's start to its first step: task data, teacher, image cache, Lightning's
        set-up), the first steps (warm-up: cuDNN's search, the graph's capture) and all training."""
        validate = selection_dataset is not None
        module = ContinualTask(self.cfg, model, self.method, context,
                               evaluator=CocoDetectionEvaluator(selection_dataset) if validate else None)
        trainer = build_trainer(self.cfg, task_dir, device=self.device, save_best=validate,
                                enable_progress_bar=self.progress_bar, logger=True, callbacks=self.callbacks)
        resume = self._resume_checkpoint(task_dir)
        self.logger.info("task %d/%d: %s | %d training images%s%s", t, len(self.scenario) - 1,
                         ", ".join(self.scenario.names(context.new_classes)), len(context.train_dataset),
                         f" | {len(selection_dataset)} validation images" if validate else "",
                         " | resuming from its last epoch" if resume else "")
        val_loaders = build_dataloader(selection_dataset, self.cfg, train=False) if validate else None
        trainer.fit(module, val_dataloaders=val_loaders, ckpt_path=resume)
        train_seconds = module.train_seconds()
        if validate and (task_dir / "model_best.ckpt").is_file():
            load_model_weight(model, task_dir / "model_best.ckpt", strict=True)
        return {
            "epochs": trainer.current_epoch, "train_seconds": round(train_seconds, 2),
            "startup_seconds": round(module.fit_started - task_started, 2),
            "startup_data_seconds": round(module.data_seconds, 2),  # the training loader's part of it
            "warmup_seconds": None if module.warmup_seconds is None else round(module.warmup_seconds, 2),
            # Augmented samples (replayed ones included) per second of training, start-up included.
            "train_img_per_s": round(module.images_seen * trainer.world_size / max(train_seconds, 1e-9), 1),
        }

    def _resume_checkpoint(self, task_dir: Path):
        last = task_dir / "model_last.ckpt"
        if not last.is_file():
            return None
        try:
            read_checkpoint(last)
        except CheckpointError as err:  # a write cut short by the interruption
            self.logger.warning("cannot resume from %s (%s): restarting this task", last, err)
            last.unlink()
            return None
        return str(last)

    def _predict(self, model, data: TaskData, eval_dataset, device):
        if self._eval_images is None:  # every evaluation's images, decoded once per run
            self._eval_images = EvalImages(data.full_val, device, workers=self.cfg.device.workers_per_gpu)
        return predict_detections(model, eval_dataset, self.cfg, device, images=self._eval_images)

    def _print_summary(self, entry: dict, results: dict):
        t = entry["task"]
        forgetting = results["per_task"][t].get("mean_forgetting")
        parts = [
            f"task {t}/{len(self.scenario) - 1} [{'+'.join(entry['new_classes'])}]",
            f"mAP {entry['mAP']:.4f}", f"VOC mAP@0.5 {entry['voc_mAP50']:.4f}",
            f"old {entry['old_mAP']:.4f}" if entry["old_classes"] else None,
            f"new {entry['new_mAP']:.4f}",
            f"forgetting {forgetting:.4f}" if forgetting is not None else None,
            f"{entry['train_images']} images", f"{entry['train_seconds']:.0f} s",
        ]
        self.logger.info(" | ".join(p for p in parts if p))
