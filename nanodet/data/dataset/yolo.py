"""YOLO txt annotations."""

from __future__ import annotations

import glob
import logging
import os
from typing import List

import cv2
import numpy as np

from .base import AnnotationError, BaseDataset, ImageRecord

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLIP_TOLERANCE = 1.0  # pixels a box may overshoot its image before its clipping is reported


class YoloDataset(BaseDataset):
    """YOLO labels: ``img_path`` a folder of images, ``ann_path`` a folder of ``<stem>.txt``.

    Each txt line is ``class cx cy w h``, centre and size normalised to [0, 1] by the image size;
    ``class`` indexes ``class_names``. An image without a txt has no boxes. The image size is read
    from the image. Boxes are clipped to the image (one warning counts those that overshot it by
    more than a pixel); a malformed line (wrong number of fields, a non-number, a class out of
    range, a size <= 0) raises naming the file and line; a box wholly outside the image is
    skipped with a warning. Images are
    sorted by file name and numbered 1, 2, ...

    Arguments: see ``BaseDataset``.
    """

    def parse_annotations(self, ann_path: str) -> List[ImageRecord]:
        if self.class_names is None:
            raise ValueError("YoloDataset needs class_names")
        if not os.path.isdir(ann_path):
            raise FileNotFoundError(f"YOLO label folder not found: {ann_path}")
        image_names = sorted(name for name in os.listdir(self.img_path)
                             if name.lower().endswith(IMAGE_EXTENSIONS))
        if not image_names:
            raise AnnotationError(f"{self.img_path}: no images in this folder")
        records, clipped = [], []  # where boxes overshot their image by more than the tolerance
        for image_id, name in enumerate(image_names, start=1):
            path = os.path.join(self.img_path, name)
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if img is None:
                raise FileNotFoundError(f"cannot read image {path} (not an image?)")
            height, width = img.shape[:2]
            txt_path = os.path.join(ann_path, os.path.splitext(name)[0] + ".txt")
            boxes, labels = self.read_labels(txt_path, width, height, clipped)
            records.append(ImageRecord(id=image_id, file_name=name, height=height, width=width,
                                       boxes=boxes, labels=labels,
                                       difficult=np.zeros(len(labels), dtype=bool)))
        if clipped:
            logger.warning("%s: %d boxes extend more than %g pixel past their image and were clipped to it, "
                           "e.g. %s", ann_path, len(clipped), CLIP_TOLERANCE, clipped[0])
        stems = {os.path.splitext(name)[0] for name in image_names}
        orphans = [p for p in glob.glob(os.path.join(ann_path, "*.txt"))
                   if os.path.splitext(os.path.basename(p))[0] not in stems]
        if orphans:
            logger.warning("%s: %d label files have no image, e.g. %s", ann_path, len(orphans),
                           orphans[0])
        return records

    def read_labels(self, txt_path: str, width: int, height: int,
                    clipped: list | None = None) -> tuple[list[list[float]], list[int]]:
        """Boxes (xyxy pixels) and labels of one txt file; none if the file does not exist.
        ``clipped`` collects the places of boxes clipped by more than ``CLIP_TOLERANCE``."""
        boxes, labels = [], []
        if not os.path.isfile(txt_path):
            return boxes, labels
        with open(txt_path) as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{txt_path}:{line_no}"
                fields = line.split()
                if len(fields) != 5:
                    raise AnnotationError(f"{where}: expected 'class cx cy w h', got {line.strip()!r}")
                try:
                    cls = float(fields[0])
                    cx, cy, w, h = (float(v) for v in fields[1:])
                except ValueError:
                    raise AnnotationError(f"{where}: not numbers: {line.strip()!r}") from None
                if cls != int(cls) or not 0 <= cls < len(self.class_names):
                    raise AnnotationError(f"{where}: class {fields[0]} is not an index into the "
                                          f"{len(self.class_names)} class_names")
                if w <= 0 or h <= 0:
                    raise AnnotationError(f"{where}: box size must be > 0, got w={w} h={h}")
                x0, x1 = (cx - w / 2) * width, (cx + w / 2) * width
                y0, y1 = (cy - h / 2) * height, (cy + h / 2) * height
                box = [max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)]
                if box[2] <= box[0] or box[3] <= box[1]:
                    logger.warning("%s: skipping a box outside the image", where)
                    continue
                # Rounding in a label file overshoots by a fraction of a pixel; more is a wrong box.
                overshoot = max(box[0] - x0, box[1] - y0, x1 - box[2], y1 - box[3])
                if clipped is not None and overshoot > CLIP_TOLERANCE:
                    clipped.append(where)
                boxes.append(box)
                labels.append(int(cls))
        return boxes, labels
