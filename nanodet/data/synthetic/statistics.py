"""What a generated set holds, as the issue tracker and the docs quote it: objects and distinct
classes per image, per-class image and object counts, and what a 15p1 one-class task image
carries besides its labelled boxes (the unlabelled objects of classes seen before)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np


def read_labels(root: str | Path, split: str = "trainval") -> list[list[int]]:
    """The labels of each image's boxes in a generated set (its COCO JSON), in image order."""
    data = json.loads((Path(root) / "annotations" / f"{split}.json").read_text())
    by_image = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(int(ann["category_id"]) - 1)  # category ids are labels + 1
    return [by_image[image["id"]] for image in data["images"]]


def set_statistics(labels_per_image: Sequence[Sequence[int]], num_classes: int = 20, base_classes: int = 15) -> dict:
    """The statistics of a set given each image's box labels (0-based). The 15p1 part takes the
    first ``base_classes`` classes as task 0 and each later class as a task of its own."""
    images = len(labels_per_image)
    objects = np.array([len(labels) for labels in labels_per_image])
    distinct = np.array([len(set(labels)) for labels in labels_per_image])
    image_counts = Counter(c for labels in labels_per_image for c in set(labels))
    object_counts = Counter(c for labels in labels_per_image for c in labels)
    tasks = []
    for task, new_class in enumerate(range(base_classes, num_classes), start=1):
        task_images = [labels for labels in labels_per_image if new_class in labels]
        old = [sum(1 for c in labels if c < new_class) for labels in task_images]
        labelled = sum(labels.count(new_class) for labels in task_images)
        tasks.append({
            "task": task, "class": new_class, "images": len(task_images),
            "old_objects_per_image": round(float(np.mean(old)), 3) if old else 0.0,
            "old_objects_per_labelled_box": round(sum(old) / max(labelled, 1), 3),
            "images_with_an_old_object": round(float(np.mean([n > 0 for n in old])), 3) if old else 0.0,
        })
    task_images = sum(t["images"] for t in tasks)
    return {
        "images": images,
        "objects_per_image": round(float(objects.mean()), 3) if images else 0.0,
        "max_objects_per_image": int(objects.max()) if images else 0,
        "distinct_classes_per_image": round(float(distinct.mean()), 3) if images else 0.0,
        "images_per_class": [image_counts.get(c, 0) for c in range(num_classes)],
        "objects_per_class": [object_counts.get(c, 0) for c in range(num_classes)],
        "15p1_tasks": tasks,
        "15p1_old_objects_per_task_image": round(
            sum(t["old_objects_per_image"] * t["images"] for t in tasks) / max(task_images, 1), 3),
        "15p1_task_images_with_an_old_object": round(
            sum(t["images_with_an_old_object"] * t["images"] for t in tasks) / max(task_images, 1), 3),
    }


def format_statistics(stats: dict, class_names: Sequence[str]) -> str:
    """A few lines for a terminal or a doc."""
    lines = [
        f"{stats['images']} images: {stats['objects_per_image']:.2f} objects per image (at most "
        f"{stats['max_objects_per_image']}), {stats['distinct_classes_per_image']:.2f} distinct classes per image",
        "images / objects per class: " + ", ".join(
            f"{name} {i}/{o}" for name, i, o in zip(class_names, stats["images_per_class"], stats["objects_per_class"])),
        f"15p1: a one-class task image holds {stats['15p1_old_objects_per_task_image']:.2f} unlabelled objects of "
        f"classes seen before ({100 * stats['15p1_task_images_with_an_old_object']:.0f}% hold at least one); per task: "
        + ", ".join(f"{class_names[t['class']]} {t['images']} images, {t['old_objects_per_image']:.2f} old objects "
                    f"an image ({t['old_objects_per_labelled_box']:.2f} per labelled box)" for t in stats["15p1_tasks"]),
    ]
    return "\n".join(lines)
