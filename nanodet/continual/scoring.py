"""Scoring a task's detections (COCO and VOC metrics), in a worker process while the next task trains.

The metrics of 2,000 test images with 200,000 detections cost seconds of host time (mostly
faster-coco-eval's Python side and the VOC matching), while inference itself takes about one. A
run does not need task t's scores to train task t+1, so on a GPU the runner hands them to one
worker process (``TaskScorer``) and collects them when the next task has trained: the scores
then cost the run nothing but for its last task. A process, not a thread, because the metrics
hold the GIL and the training loop is bound by the host. On a CPU, where training uses every
core, they are computed in place.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any
from types import SimpleNamespace

import numpy as np
import torch

from ..evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from ..evaluator.coco_detection import EvalDataset
from ..evaluator.detections import Detections
from ..util.logger import log_to_file_only
from .results import TaskScores, task_scores


def score_task(ground_truth: EvalDataset, detections: Detections, seen: list[int], old: list[str],
               new: list[str]) -> TaskScores:
    """The evaluation entry of one task: COCO mAP@[.5:.95], AP50, AP75, by size and per class,
    VOC mAP@0.5, and their means over old and new classes, over the ``seen`` classes."""
    started = time.perf_counter()
    coco = CocoDetectionEvaluator(ground_truth).evaluate(detections, class_ids=seen)
    voc = VOCDetectionEvaluator(ground_truth).evaluate(detections, class_ids=seen)
    return task_scores(coco, voc, old, new, scoring_seconds=round(time.perf_counter() - started, 2))


def ground_truth_of(dataset: EvalDataset) -> SimpleNamespace:
    """What the evaluators read of a dataset (class names and records), light to send to a process."""
    return SimpleNamespace(class_names=list(dataset.class_names), records=list(dataset.records))


def save_detections(path: Path, detections: Detections) -> None:
    """``detections`` as an .npz, written to a temporary name then renamed (never half a file)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **detections._asdict())
    tmp.replace(path)


def load_detections(path: str | Path) -> Detections:
    with np.load(path, allow_pickle=False) as data:
        return Detections(*(data[name] for name in Detections._fields))


def _start_worker(log_file: Path | None):
    """The worker runs at a lower priority on one thread: the training loop beside it is bound by
    the host, so a scorer taking its cores would slow every step. Its evaluation tables go to the
    run's log file, as they do when scored in place."""
    os.nice(10)
    torch.set_num_threads(1)
    if log_file is not None:
        log_to_file_only(log_file)


class TaskScorer:
    """Runs ``score_task`` in one worker process (``background``) or in place; ``submit`` returns a
    future either way. The worker is started with ``spawn``: a fork would copy a process that holds
    CUDA, which CUDA does not support."""

    def __init__(self, background: bool, log_file: Path | None = None) -> None:
        self._pool = None
        if background:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(log_file,))

    def submit(self, *args: Any) -> Future:
        if self._pool is not None:
            return self._pool.submit(score_task, *args)
        future = Future()
        try:
            future.set_result(score_task(*args))
        except Exception as err:  # raised where the result is read, as from the process
            future.set_exception(err)
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
