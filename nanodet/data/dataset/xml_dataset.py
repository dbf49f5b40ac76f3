"""Pascal VOC style XML annotations."""

from __future__ import annotations

import glob
import logging
import os
import xml.etree.ElementTree as ET
from typing import Iterable, List, Mapping, Optional, Sequence

from .base import AnnotationError, BaseDataset, ImageRecord

logger = logging.getLogger(__name__)


class XMLDataset(BaseDataset):
    """VOC XML annotations, for any class list.

    ``ann_path`` is either
      * a folder of ``*.xml`` files (all read, sorted by file name), or
      * a VOC image-set list ``<root>/ImageSets/Main/<split>.txt`` (one image id per line; extra
        columns ignored), whose XMLs are read from ``<root>/Annotations/<id>.xml`` in list order.

    Image ids are 1, 2, ... in that order. Each ``<object>`` gives a box ``bndbox`` (pixel
    coordinates as written, no VOC "-1", as upstream), clipped to the image; a box empty after
    clipping is skipped with a warning. ``difficult`` is kept as the flag; ``truncated`` is
    ignored. An object whose name is not in ``class_names`` is an error unless
    ``ignore_unknown_classes`` is set (then it is dropped, with one warning per name).

    Other arguments: see ``BaseDataset``.
    """

    train_on_difficult = True  # upstream trains on VOC difficult objects

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
        ignore_unknown_classes: bool = False,
    ) -> None:
        self.ignore_unknown_classes = ignore_unknown_classes
        super().__init__(img_path, ann_path, input_size, pipeline, keep_ratio, use_instance_mask,
                         use_seg_mask, use_keypoint, load_mosaic, mode, multi_scale, class_names,
                         keep_classes)

    def parse_annotations(self, ann_path: str) -> List[ImageRecord]:
        if self.class_names is None:
            raise ValueError("XMLDataset needs class_names")
        self._label_of = {name: i for i, name in enumerate(self.class_names)}
        self._unknown_seen = set()
        return [self.parse_xml(path, image_id)
                for image_id, path in enumerate(list_xml_files(ann_path), start=1)]

    def parse_xml(self, path: str, image_id: int) -> ImageRecord:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as err:
            raise AnnotationError(f"{path}: malformed XML ({err})") from None
        file_name = (root.findtext("filename") or "").strip()
        if not file_name:
            raise AnnotationError(f"{path}: no <filename>")
        width, height = _read_size(root, path)

        boxes, labels, difficult = [], [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in self._label_of:
                self._unknown_class(name, path)
                continue
            box = _read_box(obj, path)
            # Clip rather than drop boxes that spill over the border (common in VOC).
            x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
            x1, y1 = min(box[2], float(width)), min(box[3], float(height))
            if x1 <= x0 or y1 <= y0:
                logger.warning("%s: skipping empty box %s of class '%s'", path, box, name)
                continue
            boxes.append([x0, y0, x1, y1])
            labels.append(self._label_of[name])
            difficult.append(_read_flag(obj, "difficult", path))
        return ImageRecord(id=image_id, file_name=file_name, height=height, width=width,
                           boxes=boxes, labels=labels, difficult=difficult)

    def _unknown_class(self, name: str, path: str):
        if not self.ignore_unknown_classes:
            raise AnnotationError(f"{path}: unknown class '{name}'; known classes: "
                                  f"{self.class_names} (set ignore_unknown_classes to drop it)")
        if name not in self._unknown_seen:
            self._unknown_seen.add(name)
            logger.warning("%s: class '%s' not in class_names, its boxes are dropped", path, name)


def list_xml_files(ann_path: str) -> List[str]:
    """The XML files named by ``ann_path``: a folder of XMLs, or a VOC ImageSets list."""
    if os.path.isdir(ann_path):
        paths = sorted(glob.glob(os.path.join(ann_path, "*.xml")))
        if not paths:
            raise AnnotationError(f"{ann_path}: no .xml files in this folder")
        return paths
    if not os.path.isfile(ann_path):
        raise FileNotFoundError(f"annotation path not found: {ann_path}")
    # <root>/ImageSets/Main/<split>.txt -> <root>/Annotations
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ann_path))))
    xml_dir = os.path.join(root, "Annotations")
    with open(ann_path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise AnnotationError(f"{ann_path}: empty image list")
    paths = [os.path.join(xml_dir, f"{image_id}.xml") for image_id in ids]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{ann_path} lists an image whose annotation {path} is missing")
    return paths


def _read_number(node, tag: str, path: str) -> float:
    text = node.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: <{tag}> missing or not a number ({text!r})") from None


def _read_size(root, path: str):
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{path}: no <size> (image width and height)")
    width, height = int(_read_number(size, "width", path)), int(_read_number(size, "height", path))
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{path}: bad image size {width}x{height}")
    return width, height


def _read_box(obj, path: str) -> List[float]:
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise AnnotationError(f"{path}: <object> without <bndbox>")
    return [_read_number(bndbox, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]


def _read_flag(obj, tag: str, path: str) -> bool:
    text = (obj.findtext(tag) or "0").strip()
    try:
        return bool(int(float(text)))
    except ValueError:
        raise AnnotationError(f"{path}: <{tag}> is not 0 or 1 ({text!r})") from None
