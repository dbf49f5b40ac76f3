"""Small synthetic detection datasets written to disk, for tests.

``make_detection_images`` draws non-overlapping filled rectangles, one saturated colour per
class, on grey-noise backgrounds, and returns the ground truth; ``write_voc``, ``write_coco`` and
``write_yolo`` write that ground truth in each annotation format. The colours never occur in the
background, so a test can find an object's pixels by colour after any warp.

Ground truth items are dicts with the fields of ``nanodet.data.dataset.ImageRecord``:
id, file_name, height, width, boxes (float32 [N, 4] xyxy), labels (int64 [N]), difficult (bool [N]).
A rectangle covers pixels x0..x1-1 and y0..y1-1 and its box is [x0, y0, x1, y1].
"""

import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

# Background noise range: far from every class colour (each has a channel at 0 and one at 255).
BACKGROUND_RANGE = (40, 121)
MIN_GAP = 3  # pixels between rectangles, so edge blending never joins two of them


def class_colour(label: int, num_classes: int):
    """BGR colour of a class: evenly spaced hues at full saturation and value."""
    hsv = np.array([[[int(180 * label / num_classes), 255, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _place_boxes(rng, width, height, n_boxes, max_tries=200):
    """Up to ``n_boxes`` integer boxes inside the image, at least MIN_GAP apart."""
    boxes = []
    for _ in range(max_tries):
        if len(boxes) == n_boxes:
            break
        w = int(rng.integers(12, max(13, width // 2)))
        h = int(rng.integers(12, max(13, height // 2)))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] + MIN_GAP <= b[0] or b[2] + MIN_GAP <= box[0] or
               box[3] + MIN_GAP <= b[1] or b[3] + MIN_GAP <= box[1] for b in boxes):
            boxes.append(box)
    return boxes


def make_detection_images(directory, n_images: int, class_names: Sequence[str], seed: int = 0,
                          max_boxes: int = 4, size_range=((96, 200), (80, 160)),
                          difficult_fraction: float = 0.0, ext: str = ".png") -> List[Dict]:
    """Write ``n_images`` images into ``directory`` and return their ground truth (sorted).

    Image sizes are drawn from ``size_range`` ((w_min, w_max), (h_min, h_max)); each image has
    1..max_boxes rectangles of random classes; a ``difficult_fraction`` of boxes is flagged
    difficult. Use a lossless ``ext`` (.png) when a test looks at pixel colours.
    """
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for index in range(n_images):
        width = int(rng.integers(size_range[0][0], size_range[0][1] + 1))
        height = int(rng.integers(size_range[1][0], size_range[1][1] + 1))
        img = rng.integers(*BACKGROUND_RANGE, size=(height, width, 3), dtype=np.uint8)
        boxes = _place_boxes(rng, width, height, int(rng.integers(1, max_boxes + 1)))
        labels = rng.integers(0, len(class_names), size=len(boxes))
        for (x0, y0, x1, y1), label in zip(boxes, labels):
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), class_colour(label, len(class_names)),
                          thickness=-1)
        file_name = f"img_{index:04d}{ext}"
        if not cv2.imwrite(os.path.join(directory, file_name), img):
            raise OSError(f"could not write {file_name} in {directory}")
        records.append(dict(
            id=index + 1, file_name=file_name, height=height, width=width,
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            labels=labels.astype(np.int64),
            difficult=rng.random(len(boxes)) < difficult_fraction,
        ))
    return records


def write_voc(root, records: Sequence[Dict], class_names: Sequence[str],
              split: str = "trainval") -> Dict[str, str]:
    """VOC layout: ``root/Annotations/<stem>.xml`` and ``root/ImageSets/Main/<split>.txt``.

    Returns the paths: "xml_dir" and "image_set" (both usable as XMLDataset ann_path).
    """
    xml_dir = os.path.join(root, "Annotations")
    set_dir = os.path.join(root, "ImageSets", "Main")
    os.makedirs(xml_dir, exist_ok=True)
    os.makedirs(set_dir, exist_ok=True)
    stems = []
    for rec in records:
        stem = os.path.splitext(rec["file_name"])[0]
        stems.append(stem)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = rec["file_name"]
        size = ET.SubElement(ann, "size")
        for tag, value in (("width", rec["width"]), ("height", rec["height"]), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for box, label, difficult in zip(rec["boxes"], rec["labels"], rec["difficult"]):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = class_names[int(label)]
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = str(int(difficult))
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bndbox, tag).text = str(int(round(float(value))))
        ET.ElementTree(ann).write(os.path.join(xml_dir, stem + ".xml"))
    image_set = os.path.join(set_dir, f"{split}.txt")
    with open(image_set, "w") as f:
        f.write("\n".join(stems) + "\n")
    return {"xml_dir": xml_dir, "image_set": image_set}


def write_coco(path, records: Sequence[Dict], class_names: Sequence[str],
               category_ids: Optional[Sequence[int]] = None,
               extra_categories: Sequence[str] = ()) -> str:
    """COCO JSON; ``difficult`` boxes become ``iscrowd: 1``.

    ``category_ids`` gives each class its category id (default 1, 2, ...), to test that the
    reader matches by name; ``extra_categories`` adds unused categories after them.
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    categories = [{"id": cid, "name": name, "supercategory": name}
                  for cid, name in zip(ids, class_names)]
    next_id = max(ids) + 1
    for offset, name in enumerate(extra_categories):
        categories.append({"id": next_id + offset, "name": name, "supercategory": name})
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec["id"], "file_name": rec["file_name"],
                       "height": rec["height"], "width": rec["width"]})
        for box, label, difficult in zip(rec["boxes"], rec["labels"], rec["difficult"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": rec["id"],
                                "category_id": ids[int(label)], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": int(difficult)})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return str(path)


def write_yolo(label_dir, records: Sequence[Dict]) -> str:
    """One ``<stem>.txt`` per image with ``class cx cy w h`` lines normalised to [0, 1]."""
    os.makedirs(label_dir, exist_ok=True)
    for rec in records:
        lines = []
        for (x0, y0, x1, y1), label in zip(rec["boxes"], rec["labels"]):
            cx, cy = (x0 + x1) / 2 / rec["width"], (y0 + y1) / 2 / rec["height"]
            w, h = (x1 - x0) / rec["width"], (y1 - y0) / rec["height"]
            lines.append(f"{int(label)} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
        stem = os.path.splitext(rec["file_name"])[0]
        with open(os.path.join(label_dir, stem + ".txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(label_dir)
