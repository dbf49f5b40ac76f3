"""Where the time of real training steps goes: a Lightning callback, no synchronisation per step.

``StepTimer`` marks the boundaries of each training step's phases as the real Lightning loop
runs them: data wait (from the end of one step to the start of the next, so it includes the
loader and Lightning's own bookkeeping between steps), forward, assignment and losses (marked by
the module through ``mark``), logging, backward and the optimizer step (gradient clipping
included). On a GPU the marks are CUDA events, read once at the end, so measuring does not
serialise the host and the device; on the CPU they are the wall clock.

The first ``skip_steps`` steps (cuDNN autotuning, building the image cache, starting workers)
are not measured. ``result()`` gives images per second over the measured steps, the mean
milliseconds of each phase, the median, 90th percentile and slowest step, and the peak GPU memory.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pytorch_lightning as pl
import torch

# "captured_step": the whole step as one CUDA graph (device.cuda_graph), whose phases are not split.
PHASES = ("data", "forward", "assign_loss", "captured_step", "logging", "backward", "optimizer")


class StepTimer(pl.Callback):
    def __init__(self, skip_steps: int = 5) -> None:
        self.skip_steps = skip_steps
        self.cuda = False
        self._marks: list = []  # per measured step: [(phase, mark), ...] from the previous step's end
        self._positions: list = []  # per measured step: (global step, batch index in its epoch,
        # GC ms, full collections, host wall ms)
        self._position = None
        self._step_marks: list | None = None
        self._last_end = None
        self._host_last_end = None  # the wall clock at the previous step's end
        self._images = 0  # training samples of the measured steps (replayed feature maps count)
        self._images_seen_before = 0
        self._finished = False
        self.peak_memory_bytes = None
        self.peak_reserved_bytes = None
        # A full collection by Python's garbage collector can pause the host for 0.1 s or more
        # (it walks every object: torch, the data set, compiled code): its pauses are timed per step.
        self._gc_ms = 0.0
        self._gc_ms_at_last_end = 0.0
        self._gc_started = None
        self._gc_full = 0  # full (generation 2) collections
        self._gc_full_at_last_end = 0

    # ------------------------------------------------------------------ marks
    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def mark(self, phase: str) -> None:
        """End of ``phase`` of the current step (no-op outside measured steps)."""
        if self._step_marks is not None:
            self._step_marks.append((phase, self._now()))

    def _elapsed_ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else 1000.0 * (b - a)

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self._gc_ms += 1000.0 * (time.perf_counter() - self._gc_started)
            self._gc_full += info["generation"] == 2

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cuda = pl_module.device.type == "cuda"
        pl_module.step_timer = self
        gc.callbacks.append(self._on_gc)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.step_timer = None
        self._remove_gc_callback()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_gc_callback()

    def _remove_gc_callback(self):
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step < self.skip_steps or self._last_end is None:
            return
        if not self._marks and self._step_marks is None and self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._step_marks = [("start", self._last_end), ("data", self._now())]
        self._position = (trainer.global_step, batch_idx)
        self._images_seen_before = pl_module.images_seen

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self.mark("logging")

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.mark("backward")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        end, host_end = self._now(), time.perf_counter()
        if self._step_marks is not None:
            self._step_marks.append(("optimizer", end))
            self._marks.append(self._step_marks)
            # The host's own time for the step, beside the device's: where the two differ, one
            # waited for the other (a host pause shows here first, a GPU stall in the events).
            self._positions.append((*self._position, self._gc_ms - self._gc_ms_at_last_end,
                                    self._gc_full - self._gc_full_at_last_end,
                                    1000.0 * (host_end - self._host_last_end)))
            self._images += pl_module.images_seen - self._images_seen_before
            self._step_marks = None
        self._last_end, self._host_last_end = end, host_end
        self._gc_ms_at_last_end, self._gc_full_at_last_end = self._gc_ms, self._gc_full

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_memory_bytes = torch.cuda.max_memory_allocated()
            # Reserved memory also counts pools made before the measured steps, such as those of
            # CUDA graphs recorded during the warm-up, which the allocated peak misses.
            self.peak_reserved_bytes = torch.cuda.max_memory_reserved()
        self._finished = True

    # ------------------------------------------------------------------ results
    def result(self) -> dict:
        if not self._marks:
            raise RuntimeError(f"StepTimer measured no step: the run had at most {self.skip_steps} "
                               "steps (skip_steps); give it more steps")
        if not self._finished and self.cuda:
            torch.cuda.synchronize()
        totals = dict.fromkeys(PHASES, 0.0)
        per_step = []  # each step's whole time: the mean hides rare slow steps (epoch ends)
        per_step_phases = []  # and where in the step it went (a slow step's phase, not the mean's)
        for step in self._marks:
            per_step.append(0.0)
            per_step_phases.append({})
            for (_, previous), (phase, mark) in zip(step, step[1:]):
                elapsed = self._elapsed_ms(previous, mark)
                totals[phase] += elapsed
                per_step[-1] += elapsed
                per_step_phases[-1][phase] = round(per_step_phases[-1].get(phase, 0.0) + elapsed, 3)
        steps = len(self._marks)
        # Where the slow steps are: the first step of an epoch also pays for the epoch's end
        # (checkpoint, a new pass of the loader), the others only for themselves.
        epoch_first = [ms for ms, (_, batch, *_) in zip(per_step, self._positions) if batch == 0]
        within = [ms for ms, (_, batch, *_) in zip(per_step, self._positions) if batch != 0]
        per_step_record = [[step, batch, round(ms, 2), round(gc_ms, 2), round(host_ms, 2), phases]
                           for ms, phases, (step, batch, gc_ms, _, host_ms)
                           in zip(per_step, per_step_phases, self._positions)]
        per_step = sorted(per_step)
        ms = {phase: total / steps for phase, total in totals.items()}
        # Each measured step spans the previous step's end to its own, so the phases add up to
        # the wall time of the measured steps, epoch ends (checkpoints, new loaders) included.
        step_ms = sum(ms.values())
        return {
            "steps": steps,
            "images": self._images,
            "img_per_s": self._images / (step_ms * steps / 1000.0),
            "ms": ms,
            "step_ms": {"median": per_step[steps // 2], "p90": per_step[int(0.9 * (steps - 1))],
                        "max": per_step[-1],
                        "epoch_first_mean": sum(epoch_first) / len(epoch_first) if epoch_first else None,
                        "within_epoch_mean": sum(within) / len(within) if within else None},
            # [global step, batch index in the epoch, ms, of which Python GC ms, the host's wall ms,
            #  the step's ms by phase]
            "per_step": per_step_record,
            "python_gc": {"ms": sum(p[2] for p in self._positions),
                          "full_collections": sum(p[3] for p in self._positions)},
            "peak_gpu_gb": None if self.peak_memory_bytes is None else self.peak_memory_bytes / 2**30,
            "reserved_gpu_gb": None if self.peak_reserved_bytes is None else self.peak_reserved_bytes / 2**30,
        }
