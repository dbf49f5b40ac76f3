"""Detections of a whole dataset as flat arrays: one row per box.

Upstream's results format, ``{img_id: {label: [[x0, y0, x1, y1, score], ...]}}``, is a Python
list per image and class: 2,000 images of up to 100 boxes make 40,000 lists and 200,000 rows,
which cost seconds to build and seconds more for the evaluators to flatten again. The batched
inference builds ``Detections`` instead; both evaluators take either form, and
``to_results`` gives upstream's for files and tools that want it.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np


class Detections(NamedTuple):
    """``image_ids [N]`` int64, ``labels [N]`` int64, ``boxes [N, 4]`` xyxy pixels of the original
    image, ``scores [N]``; within an image, rows in decreasing score."""

    image_ids: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    @classmethod
    def concatenate(cls, parts: Iterable["Detections"]) -> "Detections":
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate(column) for column in zip(*parts)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def to_results(self, image_ids: Iterable[int], num_classes: int) -> dict[int, dict[int, list[list[float]]]]:
        """Upstream's format, with an entry for every image of ``image_ids`` and every class."""
        rows = np.concatenate([self.boxes, self.scores[:, None]], axis=1).astype(np.float32)
        order = np.lexsort((self.labels, self.image_ids))  # stable: scores stay in order
        results = {int(i): {c: [] for c in range(num_classes)} for i in image_ids}
        for (img, label), start, stop in _runs(self.image_ids[order], self.labels[order]):
            results.setdefault(img, {c: [] for c in range(num_classes)})[label] = rows[order[start:stop]].tolist()
        return results


def _runs(image_ids, labels):
    """((image, label), start, stop) of each run of equal keys in sorted arrays."""
    if len(image_ids) == 0:
        return
    change = np.flatnonzero((np.diff(image_ids) != 0) | (np.diff(labels) != 0)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(image_ids)]])
    for start, stop in zip(starts, stops):
        yield (int(image_ids[start]), int(labels[start])), start, stop
