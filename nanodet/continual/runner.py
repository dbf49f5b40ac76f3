"""The task-sequence runner: train each task, hand the weights over, evaluate, report, resume.

One run directory per run (default ``runs/<config>/<scenario>/<method>/``):

    run.json                 the run's settings; a re-run with other settings is refused
    task_<t>/model.pth       the student's weights after task t (upstream's plain format)
    task_<t>/eval.json       the evaluation after task t
    task_<t>/done.json       written last: task t is finished
    task_<t>/model_last.ckpt epoch checkpoint while task t trains (removed when it is done)
    results.json, results.md, map_per_task.png

Re-running the same command resumes: finished tasks are skipped, an interrupted task continues
from its last epoch checkpoint. Every file is written atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..model.arch import build_model
from ..trainer.builders import build_dataloader, build_trainer, resolve_devices
from ..trainer.evaluate import EvalImages, predict_detections
from ..util.check_point import CheckpointError, load_model_weight, read_checkpoint, save_model_state
from ..util.config import config_name
from ..util.io import atomic_write_json, json_safe
from ..util.logger import add_log_file, get_logger, remove_log_file
from .data import TaskData
from .methods.base import ContinualMethod, TaskContext
from .metrics import mean_ap
from .report import build_results, write_reports
from .scenario import Scenario
from .task import ContinualTask


def is_rank_zero() -> bool:
    """Rank 0 of a DDP run (Lightning's launcher sets the rank of the others' environment)."""
    return rank_zero_only.rank == 0


def wait_for_rank_zero():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class RunError(RuntimeError):
    """A run directory that cannot be resumed as asked."""


def default_run_dir(cfg, scenario: Scenario, method: ContinualMethod) -> Path:
    return Path("runs") / config_name(cfg) / scenario.name / method.run_name()


def check_continual_config(cfg):
    arch = cfg.model.arch
    if arch.get("aux_head"):
        raise RunError("continual runs use the paper's model without the auxiliary head: "
                       "remove model.arch.aux_head from the config")
    if cfg.model.get("weight_averager"):
        raise RunError("continual runs do not use an EMA weight averager: remove model.weight_averager")


class ContinualRunner:
    def __init__(self, cfg, scenario: Scenario, method: ContinualMethod, run_dir=None, seed: int = 1234,
                 device: str | None = None, restart: bool = False, handover: str = "last",
                 progress_bar: bool = True, callbacks=(), base_model=None):
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
        # Task 0 taken from this model instead of trained, so that methods start from one base.
        self.base_model = Path(base_model) if base_model else None
        if self.base_model is not None and not self.base_model.is_file():
            raise RunError(f"--base-model {self.base_model}: no such file (give a task_0/model.pth "
                           "of an earlier run, or any plain state dict of this config's model)")
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
        if not is_rank_zero():  # other DDP ranks only follow rank 0's directory
            return
        if self.restart and self.run_dir.exists():
            self.logger.info("--restart: removing %s", self.run_dir)
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(self.settings(), default=str))
        marker = self.run_dir / "run.json"
        if marker.is_file():
            previous = json.loads(marker.read_text())
            differing = sorted(k for k in set(settings) | set(previous)
                               if settings.get(k) != previous.get(k) and k != "config")
            if differing:
                raise RunError(
                    f"{self.run_dir} holds a run with other settings (they differ in: {', '.join(differing)}); "
                    f"re-run with --restart to start over, or --out to use another directory"
                )
        else:
            atomic_write_json(marker, settings)

    # ------------------------------------------------------------------ the sequence
    def run(self) -> dict:
        self._prepare_run_dir()
        handler = add_log_file(self.run_dir / "run.log")
        try:
            return self._run()
        finally:
            remove_log_file(handler)

    def _run(self) -> dict:
        accelerator, devices = resolve_devices(self.cfg.device.gpu_ids, self.device)
        eval_device = torch.device(f"cuda:{devices[0]}" if accelerator == "gpu" else "cpu")
        data = TaskData(self.cfg, self.scenario)
        pl.seed_everything(self.seed, workers=True, verbose=False)  # the initial weights too
        model = build_model(self.cfg.model)
        entries = []
        self.logger.info("%s | method %s | run dir %s", self.scenario.describe(), self.method.name, self.run_dir)
        for t in range(len(self.scenario)):
            task_dir = self.run_dir / f"task_{t}"
            if (task_dir / "done.json").is_file():
                entries.append(json.loads((task_dir / "eval.json").read_text()))
                self.logger.info("task %d already done: skipped (mAP %.4f)", t, entries[-1]["mAP"])
                continue
            entry = self._train_task(t, task_dir, data, model, eval_device)
            if not is_rank_zero():
                continue  # evaluation and reports are rank 0's
            entries.append(entry)
            results = build_results(self.settings(), self.scenario, entries, finished=t + 1 == len(self.scenario))
            write_reports(self.run_dir, results)
            self._print_summary(entry, results)
        if not is_rank_zero():
            return {}
        results = build_results(self.settings(), self.scenario, entries, finished=True)
        write_reports(self.run_dir, results)
        return results

    def _train_task(self, t: int, task_dir: Path, data: TaskData, model, eval_device) -> dict:
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
            trained = self._fit(t, task_dir, context, model, eval_dataset, task_started)
        self.method.on_task_end(context, model)
        if not is_rank_zero():  # DDP kept every rank's weights equal; rank 0 writes and evaluates
            return {}
        self.method.save_state(task_dir)
        save_model_state(task_dir / "model.pth", model)

        start = time.perf_counter()
        entry = self._evaluate(t, model, data, eval_dataset, eval_device)
        entry.update(
            train_images=len(train_dataset), **trained,
            eval_seconds=round(time.perf_counter() - start, 2),
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            parameters_in_memory=self.method.parameters_in_memory(model),
            buffer_bytes=self.method.buffer_bytes(),
        )
        entry = json_safe(entry)  # the same values whether read back from disk or not
        atomic_write_json(task_dir / "eval.json", entry)
        atomic_write_json(task_dir / "done.json", {"task": t, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        for leftover in ("model_last.ckpt", "model_best.ckpt"):
            (task_dir / leftover).unlink(missing_ok=True)
        return entry

    def _fit(self, t: int, task_dir: Path, context: TaskContext, model, eval_dataset, task_started: float) -> dict:
        """Train task t with Lightning (resuming an interrupted fit); how long it took: start-up
        (from the task's start to its first step: task data, teacher, image cache, Lightning's
        set-up), the first steps (warm-up: cuDNN's search, the graph's capture) and all training."""
        module = ContinualTask(self.cfg, model, self.method, context, evaluator=None)
        validate = self.handover == "best"
        if validate:
            module.evaluator = CocoDetectionEvaluator(eval_dataset)
        trainer = build_trainer(self.cfg, task_dir, device=self.device, save_best=validate,
                                enable_progress_bar=self.progress_bar, logger=True, callbacks=self.callbacks)
        resume = self._resume_checkpoint(task_dir)
        self.logger.info("task %d/%d: %s | %d training images%s", t, len(self.scenario) - 1,
                         ", ".join(self.scenario.names(context.new_classes)), len(context.train_dataset),
                         " | resuming from its last epoch" if resume else "")
        val_loaders = build_dataloader(eval_dataset, self.cfg, train=False) if validate else None
        trainer.fit(module, val_dataloaders=val_loaders, ckpt_path=resume)
        train_seconds = module.train_seconds()
        if validate and (task_dir / "model_best.ckpt").is_file():
            load_model_weight(model, task_dir / "model_best.ckpt", strict=True)
        return {
            "epochs": trainer.current_epoch, "train_seconds": round(train_seconds, 2),
            "startup_seconds": round(module.fit_started - task_started, 2),
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

    def _evaluate(self, t: int, model, data: TaskData, eval_dataset, device) -> dict:
        scenario = self.scenario
        seen = scenario.seen_classes(t)
        if self._eval_images is None:  # every evaluation's images, decoded once per run
            self._eval_images = EvalImages(data.full_val, device, workers=self.cfg.device.workers_per_gpu)
        detections = predict_detections(model, eval_dataset, self.cfg, device, images=self._eval_images)
        coco = CocoDetectionEvaluator(eval_dataset).evaluate(detections, class_ids=seen)
        voc = VOCDetectionEvaluator(eval_dataset).evaluate(detections, class_ids=seen)
        old, new = scenario.names(scenario.old_classes(t)), scenario.names(scenario.new_classes(t))
        return {
            "task": t,
            "new_classes": new,
            "old_classes": old,
            "seen_classes": scenario.names(seen),
            "eval_images": len(eval_dataset),
            "mAP": coco["mAP"], "AP50": coco["AP_50"], "AP75": coco["AP_75"],
            "AP_small": coco["AP_small"], "AP_m": coco["AP_m"], "AP_l": coco["AP_l"],
            "voc_mAP50": voc["mAP"],
            "old_mAP": mean_ap(coco["per_class_AP"], old), "new_mAP": mean_ap(coco["per_class_AP"], new),
            "old_voc_mAP50": mean_ap(voc["per_class_AP"], old), "new_voc_mAP50": mean_ap(voc["per_class_AP"], new),
            "per_class_AP": coco["per_class_AP"],
            "per_class_AP50": coco["per_class_AP50"],
            "per_class_voc_AP50": voc["per_class_AP"],
        }

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
        line = " | ".join(p for p in parts if p)
        self.logger.info(line)
        print(line, flush=True)
