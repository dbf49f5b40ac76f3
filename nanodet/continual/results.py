"""The results format of a continual run, in one place: a task's entry, a run's results.json,
their version, and the reading of files that earlier versions wrote.

A run writes each task's entry into ``task_<t>/eval.json`` when the task is scored, and the
run's ``results.json`` (``FORMAT``) after every task: the run's settings (as run.json), the
classes, whether it finished, what each metric is (``METRIC_NOTES``), ``per_task`` (each task's
entry with its forgetting), the task matrices, ``final`` (the last task's headline numbers) and
totals.

Metric names are the same everywhere in both files: ``mAP`` (COCO mAP@[.5:.95]), ``AP50``,
``AP75``, ``AP_small``, ``AP_medium``, ``AP_large`` (pycocotools' areas), ``voc_mAP50``; ``old_``
and ``new_`` prefixes for the means over old and new classes; ``per_class_AP``,
``per_class_AP50``, ``per_class_voc_AP50`` by class name.

Versions: files without a ``format`` (before 2026-12-02) named AP_medium and AP_large ``AP_m``
and ``AP_l``; they are read as format 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, TypedDict

from ..util.io import json_safe
from .metrics import forgetting_after, mean_ap, mean_or_nan, task_matrix
from .scenario import Scenario

FORMAT = 1
RENAMED_BEFORE_FORMAT_1 = {"AP_m": "AP_medium", "AP_l": "AP_large"}

METRIC_NOTES = {
    "mAP": "COCO mAP@[.5:.95] (pycocotools) over the seen classes",
    "AP50/AP75": "COCO AP at IoU 0.5 / 0.75; AP_small/AP_medium/AP_large: mAP@[.5:.95] by object area",
    "voc_mAP50": "VOC mAP@0.5, all-point interpolation, difficult boxes ignored, over the seen classes",
    "old/new": "mean per-class AP over classes seen before the task / of the task itself",
    "task_matrix": "R[t][k] = mAP@[.5:.95] of task k's classes after training task t",
    "forgetting": "after task t, for each earlier task k: max over k <= t' < t of R[t'][k] minus R[t][k] "
                  "(how far k's classes fell below their best; negative where they improved since, which "
                  "training on later images can do, and mean forgetting averages these over k)",
}
FINAL_KEYS = ("task", "mAP", "AP50", "voc_mAP50", "old_mAP", "new_mAP", "old_voc_mAP50", "new_voc_mAP50",
              "mean_forgetting")


class TaskScores(TypedDict):
    """A task's evaluation on the test images of the classes seen so far."""

    mAP: float
    AP50: float
    AP75: float
    AP_small: float
    AP_medium: float
    AP_large: float
    voc_mAP50: float
    old_mAP: float
    new_mAP: float
    old_voc_mAP50: float
    new_voc_mAP50: float
    per_class_AP: dict
    per_class_AP50: dict
    per_class_voc_AP50: dict
    scoring_seconds: float


class TaskTraining(TypedDict, total=False):
    """How a task trained (``base_model`` instead of the times when it was given, not trained)."""

    epochs: int
    train_seconds: float
    startup_seconds: float
    startup_data_seconds: float  # of startup_seconds, building the training loader (the GPU path decodes)
    warmup_seconds: Optional[float]
    train_img_per_s: Optional[float]
    base_model: str
    train_images: int
    eval_seconds: float
    trainable_parameters: int
    parameters_in_memory: int
    buffer_bytes: int


class TaskEntry(TaskScores, TaskTraining):
    """One task's entry in eval.json and results.json's ``per_task``."""

    task: int
    new_classes: list
    old_classes: list
    seen_classes: list
    eval_images: int


def task_scores(coco: Mapping, voc: Mapping, old: Sequence[str], new: Sequence[str],
                scoring_seconds: float) -> TaskScores:
    """A task's scores from the COCO and the VOC evaluator's metrics (upstream's names there)."""
    return TaskScores(
        mAP=coco["mAP"], AP50=coco["AP_50"], AP75=coco["AP_75"],
        AP_small=coco["AP_small"], AP_medium=coco["AP_m"], AP_large=coco["AP_l"],
        voc_mAP50=voc["mAP"],
        old_mAP=mean_ap(coco["per_class_AP"], old), new_mAP=mean_ap(coco["per_class_AP"], new),
        old_voc_mAP50=mean_ap(voc["per_class_AP"], old), new_voc_mAP50=mean_ap(voc["per_class_AP"], new),
        per_class_AP=coco["per_class_AP"], per_class_AP50=coco["per_class_AP50"],
        per_class_voc_AP50=voc["per_class_AP"], scoring_seconds=scoring_seconds,
    )


def task_entry(known: Mapping, scores: Mapping) -> TaskEntry:
    """The entry of a task from what the runner knows of it (its classes, how it trained) and its
    scores, with the values it will have when read back from disk."""
    return json_safe({**known, **scores})


def upgrade_entry(entry: dict) -> TaskEntry:
    """An entry of an older file with today's names."""
    return {RENAMED_BEFORE_FORMAT_1.get(key, key): value for key, value in entry.items()}


def read_task_entry(path: str | Path) -> TaskEntry:
    """A task's eval.json (any version)."""
    return upgrade_entry(_read_json(Path(path)))


def build_results(settings: dict, scenario: Scenario, entries: Sequence[dict], finished: bool) -> dict:
    """results.json's content after ``entries`` (the tasks scored so far, in order)."""
    task_names = [scenario.names(group) for group in scenario.tasks]
    matrix = task_matrix([e["per_class_AP"] for e in entries], task_names)
    matrix_voc = task_matrix([e["per_class_voc_AP50"] for e in entries], task_names)
    per_task = []
    for t, entry in enumerate(entries):
        forgetting = forgetting_after(matrix, t)
        per_task.append({
            **entry,
            "forgetting": {str(k): v for k, v in forgetting.items()},
            "mean_forgetting": mean_or_nan(forgetting.values()) if forgetting else None,
        })
    last = per_task[-1] if per_task else {}
    return {
        "format": FORMAT,
        **settings,
        "classes": list(scenario.class_names),
        "finished": finished and len(entries) == len(scenario),
        "metrics": METRIC_NOTES,
        "per_task": per_task,
        "task_matrix": matrix,
        "task_matrix_voc_mAP50": matrix_voc,
        "final": {k: last.get(k) for k in FINAL_KEYS},
        "total_train_seconds": round(sum(e["train_seconds"] for e in entries), 2),
        "parameters": {
            "trainable": last.get("trainable_parameters"),
            "in_memory": max((e["parameters_in_memory"] for e in entries), default=None),
        },
        "buffer_bytes": last.get("buffer_bytes", 0),
    }


def read_results(path: str | Path) -> dict:
    """A results.json of any version, in format ``FORMAT``; one written by a newer version of
    this toolkit is refused (its meaning is not known here)."""
    path = Path(path)
    results = _read_json(path)
    version = results.get("format", 0)
    if not isinstance(version, int) or version > FORMAT:
        raise ValueError(f"{path}: results format {version!r} is newer than this toolkit's ({FORMAT}); "
                         "update the toolkit to read it")
    if version < 1:
        results = {"format": FORMAT, **results, "per_task": [upgrade_entry(e) for e in results.get("per_task", [])]}
    return results


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from None
