"""Task datasets: each task's training images and each evaluation's images, from one parse.

Training set of task t: the training images holding at least one box of a task-t class, with
only those boxes (the "missing annotations" protocol: old objects stay in the pixels, unlabeled).
Evaluation after task t: the test images holding a box of a class seen so far, with only those
boxes. Labels are global indices of the config's class list throughout.

Validation (``validation_fraction`` > 0, for runs that select an epoch: ``--handover best``): a
seeded share of the training images is held out of every task's training set; selection after
task t sees those of them that hold a seen class. The test split is never used to select.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..data.dataset import BaseDataset, build_dataset, check_images
from ..util.config import CfgNode
from .scenario import Scenario


class TaskData:
    def __init__(self, cfg: CfgNode, scenario: Scenario, validation_fraction: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction must be in [0, 1), got {validation_fraction!r}")
        self.cfg = cfg
        self.scenario = scenario
        self.validation_fraction = validation_fraction
        self.seed = seed

    # Every image is checked (decoded once) when the split is first used, before anything trains:
    # a bad one fails the run at its start, not a task into it (or is left out, data.skip_bad_images).
    @cached_property
    def full_train(self) -> BaseDataset:
        return self._checked(build_dataset(self.cfg.data.train, "train", class_names=self.cfg.class_names), "training")

    @cached_property
    def full_val(self) -> BaseDataset:
        return self._checked(build_dataset(self.cfg.data.val, "val", class_names=self.cfg.class_names), "test")

    def _checked(self, dataset, split: str):
        workers = (self.cfg.get("device") or {}).get("workers_per_gpu", 4)
        return check_images(dataset, split, skip=bool(self.cfg.data.get("skip_bad_images")), workers=max(workers, 1))

    @cached_property
    def validation_ids(self) -> frozenset:
        """The ids of the held-out training images: a share drawn from the run's seed, over the
        ids in sorted order (so neither the annotation order nor the classes change it)."""
        if not self.validation_fraction:
            return frozenset()
        ids = sorted(r.id for r in self.full_train.records)
        count = max(1, round(self.validation_fraction * len(ids)))
        chosen = np.random.default_rng([self.seed, 20]).choice(len(ids), size=count, replace=False)
        return frozenset(ids[i] for i in chosen)

    def _training_part(self, held_out: bool) -> BaseDataset:
        records = [r for r in self.full_train.records if (r.id in self.validation_ids) == held_out]
        return self.full_train.with_records(records) if self.validation_ids else self.full_train

    def train_dataset(self, task: int) -> BaseDataset:
        return self._training_part(held_out=False).subset(self.scenario.new_classes(task))

    def validation_dataset(self, task: int) -> BaseDataset:
        """The held-out training images holding a class seen after ``task``, evaluated as the
        test split is (no augmentation)."""
        if not self.validation_ids:
            raise ValueError("no validation split: data.validation_fraction is 0")
        return self._training_part(held_out=True).without_augmentation().subset(self.scenario.seen_classes(task))

    def eval_dataset(self, task: int) -> BaseDataset:
        return self.full_val.subset(self.scenario.seen_classes(task))
