"""A tiny continual-learning setup for tests: a 128x128 synthetic set and a 2-task scenario."""

from pathlib import Path

import pytorch_lightning as pl

from nanodet.continual import ContinualRunner, build_method, parse_scenario
from nanodet.util import read_config

ROOT = Path(__file__).resolve().parents[1]
TINY = "{train: 24, test: 12, seed: 2, width: 128, height: 128}"
TWO_TASKS = ("[[disc, ring, square, frame, triangle, diamond, cross, star, hexagon, octagon], "
             "[pentagon, crescent, arrow, bar, lshape, tshape, checker, target, bowtie, drop]]")


def tiny_cfg(data_dir, epochs=1, extra=()):
    return read_config(ROOT / "cfg/demo.yml", [
        f"data.train.root={data_dir}", f"data.val.root={data_dir}",
        f"data.train.synthetic={TINY}", f"data.val.synthetic={TINY}",
        "data.train.input_size=[128, 128]", "data.val.input_size=[128, 128]",
        "device.workers_per_gpu=0", "device.batchsize_per_gpu=8",
        f"schedule.total_epochs={epochs}", f"schedule.lr_schedule.T_max={epochs}", "schedule.warmup.steps=2",
        "schedule.checkpoint_interval=0",  # model_last.ckpt after every epoch: resume tests stop after one
        *extra,
    ])


def tiny_runner(data_dir, run_dir, method="naive", epochs=1, callbacks=(), scenario=TWO_TASKS, seed=7,
                base_model=None, **settings):
    cfg = tiny_cfg(data_dir, epochs)
    return ContinualRunner(cfg, parse_scenario(scenario, cfg.class_names), build_method(method, **settings),
                           run_dir=run_dir, seed=seed, progress_bar=False, callbacks=callbacks,
                           base_model=base_model)


class Interrupt(pl.Callback):
    """Stops a run at the start of one epoch of one task, as a Ctrl-C would."""

    def __init__(self, task, epoch):
        self.task, self.epoch = task, epoch

    def on_train_epoch_start(self, trainer, module):
        if module.context.index == self.task and trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def priority_and_threads():
    """This process's niceness and torch's thread count (run inside a worker process)."""
    import os

    import torch

    return os.nice(0), torch.get_num_threads()
