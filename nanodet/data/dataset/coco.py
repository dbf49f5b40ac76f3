"""COCO JSON annotations."""

import json
import logging
from collections import defaultdict
from typing import List

from .base import AnnotationError, BaseDataset, ImageRecord

logger = logging.getLogger(__name__)


class CocoDataset(BaseDataset):
    """COCO detection JSON (``ann_path`` is the JSON file).

    Categories are matched to ``class_names`` by NAME, so the JSON may order its categories in
    any way or hold more of them (boxes of the extra ones are dropped, with one warning); a class
    of ``class_names`` absent from the JSON is fine. Without ``class_names`` the JSON's categories
    sorted by id are used, as upstream. Images are sorted by id; ``bbox`` [x, y, w, h] becomes
    [x0, y0, x1, y1]; boxes under 1 pixel wide or high (or of area <= 0) are skipped, as upstream.
    ``iscrowd`` (or ``ignore``) regions are kept with ``difficult`` set: evaluation ignores them
    and training leaves them out of ``gt_bboxes`` (they go to ``gt_bboxes_ignore``, as upstream).

    Arguments: see ``BaseDataset``.
    """

    train_on_difficult = False  # upstream never trains on crowd regions

    def parse_annotations(self, ann_path: str) -> List[ImageRecord]:
        data = _load_json(ann_path)
        label_of = self._category_labels(data["categories"], ann_path)

        anns_of = defaultdict(list)
        for ann in data.get("annotations", []):
            anns_of[ann.get("image_id")].append(ann)
        orphans = sorted(set(anns_of) - {info.get("id") for info in data["images"]}, key=str)
        if orphans:
            logger.warning("%s: dropped %d annotations whose image_id is not in 'images' (e.g. %r)", ann_path,
                           sum(len(anns_of[i]) for i in orphans), orphans[0])
        records, skipped = [], 0
        for info in sorted(data["images"], key=lambda img: _image_key(img, ann_path)):
            boxes, labels, difficult = [], [], []
            for ann in anns_of[info["id"]]:
                if ann.get("category_id") not in label_of:
                    continue
                try:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                except (KeyError, TypeError, ValueError):
                    raise AnnotationError(f"{ann_path}: annotation {ann.get('id')} has no valid "
                                          f"bbox [x, y, w, h]: {ann.get('bbox')!r}") from None
                if w < 1 or h < 1 or ann.get("area", w * h) <= 0:
                    skipped += 1
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of[ann["category_id"]])
                difficult.append(bool(ann.get("iscrowd", 0) or ann.get("ignore", 0)))
            records.append(ImageRecord(id=info["id"], file_name=info["file_name"],
                                       height=info["height"], width=info["width"],
                                       boxes=boxes, labels=labels, difficult=difficult))
        if skipped:
            logger.warning("%s: skipped %d boxes under 1 pixel wide or high", ann_path, skipped)
        return records

    def _category_labels(self, categories, ann_path: str) -> dict:
        """category id -> global label, matching names against ``class_names``."""
        try:
            name_of = {cat["id"]: cat["name"] for cat in categories}
        except (KeyError, TypeError):
            raise AnnotationError(f"{ann_path}: each category needs an 'id' and a 'name'") from None
        if self.class_names is None:
            self.class_names = [name_of[cat_id] for cat_id in sorted(name_of)]
        label_of_name = {name: i for i, name in enumerate(self.class_names)}
        extra = sorted(name for name in name_of.values() if name not in label_of_name)
        if name_of and len(extra) == len(name_of):
            raise AnnotationError(f"{ann_path}: none of its categories {extra} is in class_names "
                                  f"{self.class_names}; categories are matched by name")
        if extra:
            logger.warning("%s: categories not in class_names are dropped: %s", ann_path, extra)
        return {cat_id: label_of_name[name] for cat_id, name in name_of.items()
                if name in label_of_name}


def _load_json(ann_path: str) -> dict:
    try:
        with open(ann_path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {ann_path}") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{ann_path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{ann_path}: expected a COCO dict at the top level")
    missing = [key for key in ("images", "categories") if key not in data]
    if missing:
        raise AnnotationError(f"{ann_path}: no {missing} in this COCO file")
    return data


def _image_key(info, ann_path: str) -> int:
    """Sort key of an image entry, checking the fields a record needs."""
    missing = [key for key in ("id", "file_name", "height", "width") if key not in info]
    if missing:
        raise AnnotationError(f"{ann_path}: image entry {info!r} lacks {missing}")
    if not isinstance(info["id"], int):
        raise AnnotationError(f"{ann_path}: image id {info['id']!r} is not an integer")
    return info["id"]
