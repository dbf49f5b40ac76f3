"""Continual-learning metrics from per-class APs: the task matrix, forgetting, old and new mAP.

Pure functions on numbers, so they are tested on hand-made values. An AP is ``nan`` where it is
undefined (a class with no ground truth in the evaluated images); means skip such entries.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping, Optional, Sequence


def mean_ap(per_class_ap: Mapping[str, float], class_names: Sequence[str]) -> float:
    """Mean AP over ``class_names``, ignoring classes whose AP is undefined (nan or missing)."""
    values = [per_class_ap.get(name, math.nan) for name in class_names]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def task_matrix(per_class_after_task: Sequence[Mapping[str, float]],
                task_names: Sequence[Sequence[str]]) -> list[list[Optional[float]]]:
    """R[t][k]: mean AP of task k's classes after training task t (None for tasks not yet seen)."""
    return [
        [mean_ap(per_class, task_names[k]) if k <= t else None for k in range(len(task_names))]
        for t, per_class in enumerate(per_class_after_task)
    ]


def forgetting_after(matrix: Sequence[Sequence[Optional[float]]], t: int) -> dict[int, float]:
    """Forgetting of each earlier task group k < t after task t: max_{k <= t' < t} R[t'][k] - R[t][k]."""
    result = {}
    for k in range(t):
        earlier = [matrix[s][k] for s in range(k, t) if matrix[s][k] is not None and not math.isnan(matrix[s][k])]
        now = matrix[t][k]
        if earlier and now is not None and not math.isnan(now):
            result[k] = max(earlier) - now
    return result


def mean_or_nan(values: Iterable[Optional[float]]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (0 for one value); None for none."""
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_std_text(values: Sequence[float], digits: int) -> str:
    """``mean ± std``; one value alone (no spread to show); ``-`` for none."""
    stats = mean_std(values)
    if stats is None:
        return "-"
    mean, std = stats
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"
