"""The scripts of tools/ as modules, for tests that call their functions."""

import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name):
    """``tools/<name>.py`` as the module ``nanodet.tools.<name>`` (pyproject.toml maps tools/ there)."""
    return importlib.import_module(f"nanodet.tools.{name}")


def tiny_overrides(tmp_path, epochs=2):
    return [
        f"save_dir={tmp_path / 'work'}",
        f"data.train.root={tmp_path / 'data'}", f"data.val.root={tmp_path / 'data'}",
        "data.train.synthetic={train: 24, test: 8, seed: 1, width: 128, height: 128}",
        "data.val.synthetic={train: 24, test: 8, seed: 1, width: 128, height: 128}",
        "data.train.input_size=[128, 128]", "data.val.input_size=[128, 128]",
        "device.gpu_ids=-1", "device.workers_per_gpu=0", "device.batchsize_per_gpu=8",
        f"schedule.total_epochs={epochs}", f"schedule.lr_schedule.T_max={epochs}",
        "schedule.val_intervals=1", "schedule.warmup.steps=4", "log.interval=1",
    ]


def as_args(overrides):
    return [arg for text in overrides for arg in ("--set", text)]
