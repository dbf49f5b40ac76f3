"""Train a NanoDet detector on a config's data (plain or joint training).

    python tools/train.py cfg/VOC.yml [--seed 1234] [--device cpu|cpu:N|cuda|cuda:0,1] [--set KEY=VALUE ...]
    nanodet-train cfg/VOC.yml ...     # the same, from any directory, after pip install -e .

Writes into ``save_dir``: model_last.ckpt and model_best.ckpt (Lightning, upstream's key
layout), model_best/nanodet_model_best.pth (plain weights), train.log, train_cfg.yml and
TensorBoard scalars. Re-running with ``--resume`` continues from model_last.ckpt.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import yaml

from nanodet.data.dataset import build_dataset, check_images
from nanodet.evaluator import build_evaluator
from nanodet.trainer import TrainingTask, build_dataloader, build_trainer
from nanodet.util import add_log_file, get_logger, load_model_weight
from nanodet.util.cli import (add_config_arg, add_config_override_arg, add_device_arg, config_from_args, parse_args,
                              run_main)
from nanodet.util.io import atomic_write_text


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none)")
    add_device_arg(parser)
    parser.add_argument("--resume", action="store_true", help="continue from save_dir/model_last.ckpt")
    add_config_override_arg(parser)
    return parse_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    cfg = config_from_args(args.config, args)
    save_dir = Path(cfg.save_dir)
    logger = get_logger()
    if args.seed is not None:
        pl.seed_everything(args.seed, workers=True)
    resume_path = None
    if args.resume or cfg.schedule.resume:
        resume_path = cfg.schedule.resume if isinstance(cfg.schedule.resume, str) else save_dir / "model_last.ckpt"
        if not Path(resume_path).is_file():
            raise SystemExit(f"error: --resume: no checkpoint at {resume_path}")

    # Every image checked (decoded once, in threads) before anything trains or is written.
    skip, workers = bool(cfg.data.get("skip_bad_images")), max(cfg.device.workers_per_gpu, 1)
    train_dataset = check_images(build_dataset(cfg.data.train, "train", class_names=cfg.class_names), "training",
                                 skip=skip, workers=workers)
    val_dataset = check_images(build_dataset(cfg.data.val, "val", class_names=cfg.class_names), "validation",
                               skip=skip, workers=workers)
    task = TrainingTask(cfg, build_evaluator(cfg.evaluator, val_dataset))
    if cfg.schedule.load_model:
        load_model_weight(task.model, cfg.schedule.load_model, strict=False)

    save_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(save_dir / "train.log")
    atomic_write_text(save_dir / "train_cfg.yml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    logger.info("train images: %d, val images: %d", len(train_dataset), len(val_dataset))
    if cfg.schedule.load_model:
        logger.info("loaded weights from %s", cfg.schedule.load_model)

    epochs, val_every = cfg.schedule.total_epochs, cfg.schedule.val_intervals
    if val_every > epochs:  # it would never validate, so never write model_best.ckpt
        logger.warning("schedule.val_intervals (%d) is above schedule.total_epochs (%d): validating after the "
                       "last epoch instead, so that model_best.ckpt is written", val_every, epochs)
        val_every = epochs
    trainer = build_trainer(cfg, save_dir, device=args.device, val_every_n_epochs=val_every)
    task.train_dataset = train_dataset  # the task builds its loader: CPU workers or GPU batches
    trainer.fit(task, val_dataloaders=build_dataloader(val_dataset, cfg, train=False), ckpt_path=resume_path)
    if task.last_eval_results:
        logger.info("last evaluation: %s", {k: v for k, v in task.last_eval_results.items() if isinstance(v, float)})
    if trainer.is_global_zero:
        report_outputs(save_dir, trainer, args.config, cfg.evaluator.save_key)


def report_outputs(save_dir: Path, trainer: pl.Trainer, config: str, save_key: str) -> None:
    """Where the run's files are, the best epoch's score, and the command that evaluates it."""
    logger = get_logger()
    best = save_dir / "model_best.ckpt"
    score = next((c.best_model_score for c in trainer.checkpoint_callbacks
                  if Path(c.best_model_path or "") == best and c.best_model_score is not None), None)
    if best.is_file():
        logger.info("finished: %s holds model_best.ckpt (val %s %.4f), model_last.ckpt, train.log and "
                    "model_best/nanodet_model_best.pth; evaluate it with: python tools/test.py %s --model %s",
                    save_dir, save_key, float(score) if score is not None else float("nan"), config, best)
    else:
        logger.info("finished: %s holds model_last.ckpt and train.log (no validation ran, so no model_best.ckpt)",
                    save_dir)


def cli() -> None:
    """The command ``nanodet-train``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
