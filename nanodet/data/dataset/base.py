"""Common detection dataset: parsed records, class subsets and upstream's meta dict.

Each format (VOC XML, COCO JSON, YOLO txt) only parses its annotation files, once, into a list of
``ImageRecord``; everything else (class subsets, image loading, augmentation, the sample dict)
lives here, so all formats behave the same.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..transform import Pipeline

logger = logging.getLogger(__name__)

MODES = ("train", "val", "test")


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file (and line or value)."""


class ImageError(ValueError):
    """Images a run would read that cannot be used; the message lists them and why."""


def image_problem(dataset: BaseDataset, record: ImageRecord) -> Optional[str]:
    """Why the record's image cannot be used (missing, empty, not decodable, another size than
    its annotation says), or None."""
    path = os.path.join(dataset.img_path, record.file_name)
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) == 0:
        return "empty file"
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return "not a decodable image"
    height, width = img.shape[:2]
    if (height, width) != (int(record.height), int(record.width)):
        return f"{width}x{height} pixels, annotated {int(record.width)}x{int(record.height)}"
    return None


def check_images(dataset: BaseDataset, split: str, skip: bool = False, workers: int = 8) -> BaseDataset:
    """Every image of ``dataset`` decoded once, in threads, before anything trains: a dataset
    with a bad image raises one ``ImageError`` listing them (``split`` names its config node), or,
    with ``skip``, comes back without them and a warning."""
    records = list(dataset.records)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV releases the GIL while decoding
        problems = list(pool.map(lambda r: image_problem(dataset, r), records))
    bad = [(r, why) for r, why in zip(records, problems) if why]
    if not bad:
        return dataset
    shown = "; ".join(f"{r.file_name} ({why})" for r, why in bad[:10])
    listing = shown + (f"; ... and {len(bad) - 10} more" if len(bad) > 10 else "")
    if not skip:
        raise ImageError(f"{dataset.img_path}: {len(bad)} of {len(records)} {split} images cannot be used: "
                         f"{listing}. Fix or remove them, or set data.skip_bad_images: true to leave them out")
    logger.warning("%s: leaving out %d of %d %s images (data.skip_bad_images): %s", dataset.img_path, len(bad),
                   len(records), split, listing)
    kept = {id(r) for r, why in zip(records, problems) if not why}
    return dataset.with_records([r for r in records if id(r) in kept])


@dataclasses.dataclass
class ImageRecord:
    """One image and its boxes, in the image's own pixel coordinates.

    ``labels`` are global indices into the dataset's ``class_names``. ``difficult`` marks boxes
    that evaluation ignores: VOC ``difficult`` objects, COCO ``iscrowd`` regions.
    """

    id: int
    file_name: str  # relative to the dataset's img_path
    height: int
    width: int
    boxes: np.ndarray  # float32 [N, 4] x0, y0, x1, y1
    labels: np.ndarray  # int64 [N]
    difficult: np.ndarray  # bool [N]

    def __post_init__(self):
        self.id, self.height, self.width = int(self.id), int(self.height), int(self.width)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.difficult):
            raise ValueError(f"image {self.file_name}: boxes, labels and difficult differ in length")

    def select(self, mask: np.ndarray) -> "ImageRecord":
        """A copy holding only the boxes where ``mask`` is true."""
        return dataclasses.replace(self, boxes=self.boxes[mask], labels=self.labels[mask],
                                   difficult=self.difficult[mask])


def filter_records(records: Sequence[ImageRecord], keep_classes: Iterable[int]) -> List[ImageRecord]:
    """Images with at least one box of ``keep_classes``, holding only those boxes.

    This is the continual-learning "missing annotations" protocol: the other classes' objects stay
    in the pixels but lose their labels. Labels stay global; order is kept.
    """
    keep = np.array(sorted({int(c) for c in keep_classes}), dtype=np.int64)
    kept = []
    for record in records:
        mask = np.isin(record.labels, keep)
        if mask.any():
            kept.append(record.select(mask))
    return kept


class BaseDataset(Dataset, ABC):
    """A detection dataset returning upstream NanoDet's sample dict.

    Args:
        img_path: folder the images' ``file_name`` are relative to.
        ann_path: annotation file or folder (format-specific).
        input_size: network input [width, height].
        pipeline: upstream's pipeline keys (see ``nanodet.data.transform.PIPELINE_KEYS``). Only
            the resize and ``normalize`` are used unless ``mode`` is "train".
        keep_ratio: keep the aspect ratio when resizing.
        use_instance_mask, use_seg_mask, use_keypoint, load_mosaic: upstream options that are
            not supported; accepted (False) so upstream configs load.
        mode: "train" (random augmentation) or "val" / "test" (resize and normalise only).
        multi_scale: (low, high) factor range of a random input size per training sample.
        class_names: ordered class list; a label is an index into it.
        keep_classes: optional global class indices; see ``subset``.
    """

    # Whether boxes flagged ``difficult`` are trained on. Upstream trains on VOC's difficult
    # objects (its XML reader ignores the flag) but not on COCO's crowd regions, which it moves
    # to ``gt_bboxes_ignore``. Formats override this.
    train_on_difficult = True

    def __init__(
        self,
        img_path: str,
        ann_path: str,
        input_size: Sequence[int],
        pipeline: Mapping,
        keep_ratio: bool = True,
        use_instance_mask: bool = False,
        use_seg_mask: bool = False,
        use_keypoint: bool = False,
        load_mosaic: bool = False,
        mode: str = "train",
        multi_scale: Optional[Sequence[float]] = None,
        class_names: Optional[Sequence[str]] = None,
        keep_classes: Optional[Iterable[int]] = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"dataset mode must be one of {MODES}, got {mode!r}")
        unsupported = {"use_instance_mask": use_instance_mask, "use_seg_mask": use_seg_mask,
                       "use_keypoint": use_keypoint, "load_mosaic": load_mosaic}
        enabled = [name for name, value in unsupported.items() if value]
        if enabled:
            raise NotImplementedError(f"{type(self).__name__}: {enabled} not supported (boxes only)")
        self.img_path = str(img_path)
        self.ann_path = str(ann_path)
        self.input_size = tuple(int(s) for s in input_size)
        self.keep_ratio = keep_ratio
        self.mode = mode
        self.multi_scale = multi_scale
        self.pipeline_cfg = dict(pipeline)
        self.pipeline = Pipeline(pipeline, keep_ratio, augment=(mode == "train"))
        self.class_names = list(class_names) if class_names is not None else None

        records = self.parse_annotations(self.ann_path)  # may fill class_names (COCO)
        if self.class_names is None:
            raise ValueError(f"{type(self).__name__} needs class_names")
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise AnnotationError(f"{self.ann_path}: image ids are not unique")
        self.records: List[ImageRecord] = records
        # Shared by this dataset and every subset of it (they are shallow copies): what is worth
        # computing once per image, such as the GPU augmentation's decoded images.
        self.shared_cache: dict = {}
        self.keep_classes: Optional[List[int]] = None
        if keep_classes is not None:
            self.keep_classes = self._check_classes(keep_classes)
            self.records = filter_records(records, self.keep_classes)
        boxes = sum(len(r.labels) for r in self.records)
        if mode == "train" and self.records and not boxes:
            raise AnnotationError(f"{self.ann_path}: none of its {len(self.records)} images has a box of "
                                  f"class_names {self.class_names}: nothing to train on")
        logger.info("%s %s: %d images, %d boxes, %d classes", type(self).__name__, self.ann_path,
                    len(self.records), boxes, len(self.class_names))

    @abstractmethod
    def parse_annotations(self, ann_path: str) -> List[ImageRecord]:
        """Read every annotation once; labels are indices into ``self.class_names``."""

    # ------------------------------------------------------------------ subsets
    def with_records(self, records: Sequence[ImageRecord]) -> "BaseDataset":
        """A shallow copy of this dataset over other records (same images folder, pipeline)."""
        dataset = copy.copy(self)
        dataset.records = list(records)
        return dataset

    def without_augmentation(self) -> "BaseDataset":
        """A shallow copy that only resizes and normalises, as for evaluation."""
        dataset = copy.copy(self)
        dataset.mode = "val"
        dataset.pipeline = Pipeline(self.pipeline_cfg, self.keep_ratio, augment=False)
        return dataset

    def subset(self, keep_classes: Iterable[int]) -> "BaseDataset":
        """A dataset of the images holding a box of ``keep_classes``, with only those boxes.

        Labels stay global indices. No re-parsing: the continual-learning layer builds every
        task's dataset from one parse. On an already restricted dataset the classes intersect.
        """
        keep = self._check_classes(keep_classes)
        dataset = self.with_records(filter_records(self.records, keep))
        if self.keep_classes is not None:
            keep = sorted(set(keep) & set(self.keep_classes))
        dataset.keep_classes = keep
        if not dataset.records:
            logger.warning("%s: no image holds a box of classes %s", self.ann_path,
                           [self.class_names[c] for c in keep])
        return dataset

    def _check_classes(self, keep_classes: Iterable[int]) -> List[int]:
        keep = sorted({int(c) for c in keep_classes})
        if not keep:
            raise ValueError("keep_classes is empty")
        bad = [c for c in keep if not 0 <= c < len(self.class_names)]
        if bad:
            raise ValueError(f"keep_classes {bad} outside the {len(self.class_names)} classes "
                             f"of {self.ann_path}")
        return keep

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.records)

    def read_image(self, record: ImageRecord) -> np.ndarray:
        """The record's image as BGR uint8 (cv2)."""
        path = os.path.join(self.img_path, record.file_name)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image {path} (missing or not an image)")
        return img

    def get_random_size(self, scale_range: Sequence[float],
                        image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Input size scaled by one random factor in ``scale_range`` (upstream's multi-scale)."""
        factor = random.uniform(*scale_range)
        return int(image_size[0] * factor), int(image_size[1] * factor)

    def __getitem__(self, item) -> dict:
        """Sample ``item``: an index, or ``(index, seed)`` from a seeded sampler
        (nanodet/data/seeded_sampling.py), whose augmentation then draws from that seed alone."""
        if not isinstance(item, tuple):
            return self._sample(item)
        index, seed = item
        state = random.getstate()  # the caller's stream goes on as if this sample drew nothing
        random.seed(seed)
        try:
            return self._sample(index)
        finally:
            random.setstate(state)

    def _sample(self, idx: int) -> dict:
        record = self.records[idx]
        trained = np.ones(len(record.labels), dtype=bool)
        if not self.train_on_difficult:
            trained = ~record.difficult
        meta = {
            "img": self.read_image(record),
            "img_info": {"file_name": record.file_name, "height": record.height,
                         "width": record.width, "id": record.id},
            "gt_bboxes": record.boxes[trained].copy(),
            "gt_labels": record.labels[trained].copy(),
            "gt_bboxes_ignore": record.boxes[~trained].copy(),
        }
        input_size = self.input_size
        if self.multi_scale and self.mode == "train":
            input_size = self.get_random_size(self.multi_scale, input_size)
        meta = self.pipeline(self, meta, input_size)
        meta["img"] = torch.from_numpy(np.ascontiguousarray(meta["img"].transpose(2, 0, 1)))
        return meta
