"""Measure real training, end to end, in img/s: the continual methods' own code under Lightning.

    python tools/benchmark.py cfg/synthetic.yml --method naive ld --set device.batchsize_per_gpu=256 \\
        --steps 60 --set device.precision=bf16 --reference
    nanodet-benchmark cfg/synthetic.yml ...   # the same, from any directory, after pip install -e .

Each method trains a task exactly as the runner trains it (``ContinualTask`` with the method's
hooks, the config's Trainer: precision, gradient clipping, per-epoch checkpoints, logging) for
``--warmup`` unmeasured then ``--steps`` measured steps, and a ``StepTimer`` callback reports
images per second, the step's phases (data wait, forward, assignment and losses, logging,
backward, optimizer) and the peak GPU memory. Runs on one device, ``--device`` (of a list, the
first), by default CUDA when present, else the CPU (use tiny numbers there, e.g. ``--set
device.batchsize_per_gpu=4 --steps 3``).

The training settings are the config's, as a user's run reads them, changed with ``--set``:
``device.batchsize_per_gpu``, ``device.precision``, ``device.channels_last``, ``device.compile``,
``device.cuda_graph``, ``device.workers_per_gpu``...; each path then sets its own switches (below).

Methods: ``joint`` trains every class (task 0 of the ``joint`` scenario); the continual methods
train task 1 of ``--scenario`` (default 10p10), after their task-0 state is made: the teacher is
the (untrained) task-0 model and replay buffers are filled from task 0's images, which costs the
same per step as a trained one.

Two paths, in the same run:

* **fast** (always): ``device.gpu_augment`` (images decoded once into a uint8 cache on the GPU,
  augmented there per batch) and the batched label assigner, with the config's ``device.compile``
  and ``device.cuda_graph``.
* **reference** (``--reference``): upstream's way, the CPU augmentation pipeline in DataLoader
  workers and per-image label assignment, neither compiled nor captured, for the speed-up.

``--set device.compile=MODE`` compiles the fast path (``reduce-overhead``: CUDA graphs, the
fastest on an H100); compilation happens in the ``--warmup`` steps, so give it 3 or more.

The data is the synthetic benchmark, generated into ``--data`` if missing (the config's spec, or a
smaller one with ``--train-images``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from nanodet.continual.data import TaskData
from nanodet.continual.methods import METHODS, TaskContext, build_method
from nanodet.continual.scenario import parse_scenario
from nanodet.continual.task import ContinualTask
from nanodet.model.arch import build_model
from nanodet.trainer.builders import FreezeLongLivedObjects, build_trainer, inference_device, on_this_device
from nanodet.trainer.compile import compile_mode
from nanodet.trainer.step_timer import PHASES, StepTimer
from nanodet.util import CfgNode
from nanodet.util.cli import add_config_arg, add_config_override_arg, add_device_arg, parse_args, run_main
from nanodet.util.config import read_config
from nanodet.util.io import atomic_write_json

HEADER = ("| method | path | batch | precision | channels_last | compile | img/s | "
          + " | ".join(f"{p} ms" for p in PHASES)
          + " | median / max step ms | peak GPU GB | reserved GPU GB | device |")


# Each path's own switches, set after the user's --set (so they hold on that path).
PATH_SETTINGS = {
    "fast": ["device.gpu_augment=true", "model.arch.head.batched_assign=true"],
    "reference": ["device.gpu_augment=false", "device.compile=false", "device.cuda_graph=false",
                  "model.arch.head.batched_assign=false"],
}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser, example="cfg/synthetic.yml")
    parser.add_argument("--method", nargs="+", default=["naive"], choices=("joint", *METHODS),
                        help="one or more methods (default naive)")
    parser.add_argument("--scenario", default="10p10", help="the continual methods train its task 1 (default 10p10)")
    parser.add_argument("--pseudo-labels", type=float, default=None, metavar="SCORE",
                        help="also add the teacher's pseudo-labels (methods with a teacher step)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="measured steps of the reference path (default: --steps; it is 10x slower)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="unmeasured steps first (at least 1; 3 or more keeps the one garbage collection "
                             "before the GC freeze, after step 3, out of the measured steps)")
    parser.add_argument("--reference", action="store_true",
                        help="also run upstream's path (CPU pipeline in DataLoader workers, per-image assigner)")
    parser.add_argument("--data", default=None, help="folder of the synthetic set (default: the config's root)")
    parser.add_argument("--train-images", type=int, default=None, help="a smaller set than the config's")
    parser.add_argument("--input-size", type=int, default=None, help="square input size instead of the config's")
    add_device_arg(parser, default="cuda if available", one_device=True)
    parser.add_argument("--progress-bar", action="store_true", help="keep Lightning's progress bar on, as a user's run")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="also profile measured steps with torch.profiler; tables written to DIR")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave Python's garbage collector as it is, for comparison (by default the "
                             "objects alive after the first steps are frozen: FreezeLongLivedObjects in "
                             "nanodet/trainer/builders.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    add_config_override_arg(parser)
    return parse_args(parser, argv)


def benchmark_config(args: argparse.Namespace, reference: bool) -> CfgNode:
    """The config with the user's ``--set`` and then the fast or the reference path's switches."""
    path = PATH_SETTINGS["reference" if reference else "fast"]
    overrides = [*args.overrides, *path, "schedule.val_intervals=1000000"]
    for split in ("train", "val"):
        if args.data:
            overrides.append(f"data.{split}.root={args.data}")
        if args.input_size:
            overrides.append(f"data.{split}.input_size=[{args.input_size},{args.input_size}]")
        if args.train_images:
            overrides += [f"data.{split}.synthetic.train={args.train_images}",
                          f"data.{split}.synthetic.test={max(1, args.train_images // 4)}"]
    return read_config(args.config, overrides)


class ProfileSteps(pl.Callback):
    """torch.profiler over ``active`` steps after ``skip``: top operators by host and device time."""

    def __init__(self, path: Path, skip: int, active: int) -> None:
        self.path, self.skip, self.active = path, skip, active
        self.profiler = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.skip and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.profiler is not None and trainer.global_step >= self.skip + self.active:
            self._write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write()

    def _write(self):
        if self.profiler is None:
            return
        self.profiler.__exit__(None, None, None)
        averages = self.profiler.key_averages()
        tables = [f"{self.active} steps; sorted by {key}\n" + averages.table(sort_by=key, row_limit=40)
                  for key in ("self_cpu_time_total", "self_device_time_total", "cpu_time_total")]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n\n".join(tables))
        self.profiler = None


def run_method(name: str, args: argparse.Namespace, reference: bool, device: torch.device) -> dict[str, Any]:
    cfg = benchmark_config(args, reference)
    joint = name == "joint"
    scenario = parse_scenario("joint" if joint else args.scenario, cfg.class_names)
    task = 0 if joint else 1
    options = {"pseudo_labels": args.pseudo_labels} if args.pseudo_labels is not None and not joint else {}
    method = build_method("naive" if joint else name, **options)
    data = TaskData(cfg, scenario)
    pl.seed_everything(args.seed, verbose=False)
    model = build_model(cfg.model).to(device)
    if task > 0:  # the state a method has after task 0: its teacher, its buffer
        first = TaskContext(0, scenario, cfg, train_dataset=data.train_dataset(0), seed=args.seed)
        method.on_task_start(first, model)
        method.on_task_end(first, model)
    context = TaskContext(task, scenario, cfg, train_dataset=data.train_dataset(task), seed=args.seed)
    method.on_task_start(context, model)
    module = ContinualTask(cfg, model, method, context)
    timer = StepTimer(skip_steps=max(1, args.warmup))
    callbacks = [timer]
    if args.profile:
        callbacks.append(ProfileSteps(Path(args.profile) / f"{name}_{'reference' if reference else 'fast'}.txt",
                                      skip=max(1, args.warmup), active=min(args.steps, 10)))
    steps = args.reference_steps if reference and args.reference_steps else args.steps
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, run_dir, device=str(device), callbacks=callbacks, save_best=False,
                                freeze_gc=not args.no_gc_freeze,
                                enable_progress_bar=args.progress_bar, max_steps=max(1, args.warmup) + steps)
        trainer.fit(module)
    result = timer.result()
    freeze = next((c for c in trainer.callbacks if isinstance(c, FreezeLongLivedObjects)), None)
    on_gpu = device.type == "cuda"
    return {
        "method": name + ("+pseudo_labels" if options else ""), "path": "reference" if reference else "fast",
        "scenario": scenario.name, "task": task, "train_images": len(context.train_dataset),
        "steps_per_epoch": trainer.num_training_batches,
        "batch": cfg.device.batchsize_per_gpu, "precision": trainer.precision,
        "channels_last": on_this_device(cfg.device.channels_last, device),
        "compile": compile_mode(cfg.device.compile),
        "cuda_graph": not module.automatic_optimization if module._trainer is not None else False,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        **result,
        # the one collection before the freeze, in the warm-up (None: not frozen)
        "gc_freeze": None if freeze is None or not freeze.frozen_objects else {
            "objects": freeze.frozen_objects, "collect_ms": 1000.0 * freeze.collect_seconds},
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
    }


def row(result: dict[str, Any]) -> str:
    ms = result["ms"]
    peak = "-" if result["peak_gpu_gb"] is None else f"{result['peak_gpu_gb']:.2f}"
    reserved = "-" if result.get("reserved_gpu_gb") is None else f"{result['reserved_gpu_gb']:.2f}"
    return (f"| {result['method']} | {result['path']} | {result['batch']} | {result['precision']} "
            f"| {'yes' if result['channels_last'] else 'no'} | {result['compile'] or 'no'} "
            f"| {result['img_per_s']:,.0f} "
            + " ".join(f"| {ms[p]:.1f}" for p in PHASES)
            + f" | {result['step_ms']['median']:.1f} / {result['step_ms']['max']:.1f} | {peak} | {reserved}"
            + f" | {result['device']} |")


def print_gc_and_slow_steps(result: dict[str, Any], factor: float = 1.5) -> None:
    """The collection before the GC freeze, collections in measured steps, and the steps that took
    more than ``factor`` times the median, with where they were."""
    if result.get("gc_freeze"):
        print(f"  (warm-up: one collection of {result['gc_freeze']['collect_ms']:.0f} ms, then "
              f"{result['gc_freeze']['objects']:,} objects frozen)", flush=True)
    collected = result["python_gc"]
    if collected["full_collections"]:
        print(f"  ({collected['full_collections']} full garbage collections in the measured steps: "
              f"{collected['ms']:.0f} ms of Python GC in all)", flush=True)
    median = result["step_ms"]["median"]
    slow = [s for s in result["per_step"] if s[2] > factor * median]
    if slow:
        extra = sum(s[2] - median for s in slow)
        print(f"  {len(slow)} of {result['steps']} steps over {factor:g}x the median ({median:.1f} ms), "
              f"{extra:.0f} ms beyond it in all: "
              + ", ".join(f"step {s[0]} (batch {s[1]}) {s[2]:.0f} ms, host {s[4]:.0f}, GC {s[3]:.0f}"
                          + _longest_phase(s) for s in slow[:12]), flush=True)


def _longest_phase(step: list) -> str:
    """The text ', most in PHASE N ms' for a per-step record with its phases (older JSONs have none)."""
    phases = step[5] if len(step) > 5 else None
    if not phases:
        return ""
    phase, ms = max(phases.items(), key=lambda item: item[1])
    return f", most in {phase} {ms:.0f}"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_arguments(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    if args.reference_steps is not None and args.reference_steps < 1:
        raise SystemExit(f"--reference-steps must be at least 1, got {args.reference_steps}")
    device = inference_device(args.device)
    print(HEADER)
    print("|" + "---|" * (HEADER.count(" | ") + 1))
    results = []
    for name in args.method:
        for reference in (False, True) if args.reference else (False,):
            results.append(run_method(name, args, reference, device))
            print(row(results[-1]), flush=True)
            print_gc_and_slow_steps(results[-1])
            if args.json:  # after every run, so a long benchmark cut short keeps what it measured
                atomic_write_json(args.json, results)
    if args.reference:
        print()
        for fast, ref in zip(results[::2], results[1::2]):
            print(f"{fast['method']}: fast / reference = {fast['img_per_s'] / ref['img_per_s']:.1f}x")
    return results


def cli() -> None:
    """The command ``nanodet-benchmark``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
