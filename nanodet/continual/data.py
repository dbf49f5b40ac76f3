"""Task datasets: each task's training images and each evaluation's images, from one parse.

Training set of task t: the training images holding at least one box of a task-t class, with
only those boxes (the "missing annotations" protocol: old objects stay in the pixels, unlabeled).
Evaluation after task t: the test images holding a box of a class seen so far, with only those
boxes. Labels are global indices of the config's class list throughout.
"""

from __future__ import annotations

from functools import cached_property

from ..data.dataset import BaseDataset, build_dataset, check_images
from ..util.config import CfgNode
from .scenario import Scenario


class TaskData:
    def __init__(self, cfg: CfgNode, scenario: Scenario) -> None:
        self.cfg = cfg
        self.scenario = scenario

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

    def train_dataset(self, task: int) -> BaseDataset:
        return self.full_train.subset(self.scenario.new_classes(task))

    def eval_dataset(self, task: int) -> BaseDataset:
        return self.full_val.subset(self.scenario.seen_classes(task))
