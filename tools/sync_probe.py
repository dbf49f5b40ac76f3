"""Where a continual run's host waits for the GPU: step times, and the code that synchronises.

    python tools/sync_probe.py latentDistillation.py --task 15p1 --cfg cfg/synthetic.yml \\
        --set schedule.total_epochs=8 --probe-fits 2
    nanodet-sync-probe latentDistillation.py ...   # the same, after pip install -e . (an editable install)

Runs the entry point (naive.py, replay.py, lwf.py, SID.py, latentDistillation.py, with its own
arguments) in this process with one more Lightning callback on every task's Trainer. For each fit
it prints one ``PROBE {json}`` line: the steps' wall times (median, mean, first step of an epoch,
the slowest), split into the time inside the training step and between steps (data, Lightning's
loop, callbacks). On a CUDA device it also records, for steps ``--sync-from`` to ``--sync-to`` of
each fit, every distinct Python stack at which the host waited for the GPU
(``torch.cuda.set_sync_debug_mode``), with how often, and prints them as ``SYNC xN`` blocks. A
step whose host waits for the GPU cannot prepare the next batch while the GPU works: with the step
one graph replay, one wait per step cost a third of it (docs/results/runner_sync_diagnosis_h200.json).
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch

from nanodet.continual import runner as runner_module

ROOT = Path(__file__).resolve().parents[1]  # the repository, whose entry points are run


class StepProbe(pl.Callback):
    """Times every training step of a fit and, on CUDA, collects the stacks that synchronise."""

    def __init__(self, sync_steps: tuple[int, int] = (300, 400), stack_depth: int = 9,
                 on_summary: Callable[[dict[str, Any]], Any] = print) -> None:
        self.sync_steps = sync_steps
        self.stack_depth = stack_depth
        self.on_summary = on_summary
        self.summaries: list[dict] = []
        self.waits: Counter = Counter()
        self._recording = False

    # ------------------------------------------------------------------ timing
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._starts, self._ends, self._epoch_first = [], [], []
        self.waits = Counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._starts.append(time.perf_counter())
        self._epoch_first.append(batch_idx == 0)
        step = len(self._starts) - 1
        self._record_waits(step == self.sync_steps[0] or (self._recording and step < self.sync_steps[1]))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._ends.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_waits(False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        summary = self.summarise(self._starts, self._ends, self._epoch_first)
        summary["fit"] = len(self.summaries)
        summary["waits"] = [{"count": n, "stack": list(stack)} for stack, n in self.waits.most_common()]
        self.summaries.append(summary)
        self.on_summary(summary)

    @staticmethod
    def summarise(starts: Sequence[float], ends: Sequence[float], epoch_first: Sequence[bool],
                  skip: int = 10) -> dict[str, Any]:
        """Step statistics in ms, leaving out the first ``skip`` steps (warm-up) when there are more."""
        first = max(1, skip) if len(ends) > skip + 1 else 1
        if len(ends) < 2:
            return {"steps": len(ends)}
        steps = [ends[i] - ends[i - 1] for i in range(first, len(ends))]
        inside = [ends[i] - starts[i] for i in range(first, len(ends))]
        between = [starts[i] - ends[i - 1] for i in range(first, len(ends))]
        epoch_starts = [ends[i] - ends[i - 1] for i in range(first, len(ends)) if epoch_first[i]]

        def ms(values, how):
            return round(1e3 * how(values), 2) if values else None

        return {
            "steps": len(ends), "seconds": round(ends[-1] - starts[0], 2),
            "step_median_ms": ms(steps, statistics.median), "step_mean_ms": ms(steps, statistics.mean),
            "inside_step_median_ms": ms(inside, statistics.median),
            "between_steps_median_ms": ms(between, statistics.median),
            "epoch_first_step_mean_ms": ms(epoch_starts, statistics.mean),
            "slowest_ms": sorted(round(1e3 * s, 1) for s in steps)[-5:],
        }

    # ------------------------------------------------------------------ waits
    def _record_waits(self, on: bool):
        if on == self._recording or not torch.cuda.is_available():
            return
        self._recording = on
        torch.cuda.set_sync_debug_mode("warn" if on else "default")

    def saw_warning(self, message: Warning | str) -> bool:
        """Count the stack of a synchronisation warning; False for any other warning."""
        if "synchroniz" not in str(message).lower():
            return False
        # The caller's frames: not this file's, nor the warnings module's that delivered it.
        frames = [frame for frame in traceback.extract_stack()
                  if frame.filename != __file__ and not frame.filename.endswith("warnings.py")]
        stack = tuple(f"{_short(frame.filename)}:{frame.lineno}:{frame.name}" for frame in frames)[-self.stack_depth:]
        self.waits[stack] += 1
        return True


def _short(filename: str) -> str:
    return filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")


def print_summary(summary: dict[str, Any]) -> None:
    waits = summary.pop("waits")
    print("PROBE", json.dumps(summary), flush=True)
    for wait in waits:
        print(f"SYNC x{wait['count']}:\n    " + "\n    ".join(wait["stack"]), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entry_point", help="naive.py, replay.py, lwf.py, SID.py or latentDistillation.py")
    parser.add_argument("--sync-from", type=int, default=300, help="first step of each fit whose waits are recorded")
    parser.add_argument("--sync-to", type=int, default=400, help="the step after the last one recorded")
    parser.add_argument("--probe-fits", type=int, default=None, help="stop after this many fits (tasks)")
    args, entry_args = parser.parse_known_args(argv)
    entry = ROOT / args.entry_point
    if not entry.is_file():
        raise SystemExit(f"error: {args.entry_point}: no such entry point in {ROOT}")

    class Stop(Exception):
        pass

    def summary_then_maybe_stop(summary):
        print_summary(summary)
        if args.probe_fits is not None and len(probe.summaries) >= args.probe_fits:
            raise Stop

    probe = StepProbe((args.sync_from, args.sync_to), on_summary=summary_then_maybe_stop)
    show_warning = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not probe.saw_warning(message):
            show_warning(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", UserWarning)  # every wait, not the first per line
    init = runner_module.ContinualRunner.__init__

    def with_probe(self, *a, **kw):
        init(self, *a, **{**kw, "callbacks": [*kw.get("callbacks", ()), probe]})

    runner_module.ContinualRunner.__init__ = with_probe
    sys.argv = [str(entry), *entry_args]
    try:
        runpy.run_path(str(entry), run_name="__main__")
    except Stop:
        print(f"stopped after {len(probe.summaries)} fit(s) (--probe-fits)", flush=True)


def cli() -> None:
    """The command ``nanodet-sync-probe``: ``main`` as it is, so that the entry point's own arguments
    (``--debug`` too) reach it untouched."""
    main()


if __name__ == "__main__":
    cli()
