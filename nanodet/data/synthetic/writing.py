"""Writing a set: each image as a JPEG with its VOC XML (in a process pool), the split lists and
COCO JSON, built beside the target and renamed into place; and finding or making it on first use."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from multiprocessing import get_context
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape

import cv2
import numpy as np

from .fashion_mnist import load_fashion_mnist
from .rendering import render_image
from .spec import SyntheticSpec

def _voc_xml(image_id: str, width: int, height: int, objects, classes) -> str:
    parts = [
        "<annotation>", "  <folder>JPEGImages</folder>", f"  <filename>{image_id}.jpg</filename>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for label, (x0, y0, x1, y1) in objects:
        truncated = int(x0 == 0 or y0 == 0 or x1 == width or y1 == height)
        parts += [
            "  <object>", f"    <name>{escape(classes[label])}</name>",
            "    <pose>Unspecified</pose>", f"    <truncated>{truncated}</truncated>",
            "    <difficult>0</difficult>",
            f"    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


_SPLITS = {"trainval": 0, "test": 1}


def _image_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _generate_one(job):
    out_dir, spec_dict, split, index = job
    cv2.setNumThreads(1)  # parallelism comes from the process pool
    spec = SyntheticSpec(**spec_dict)
    rng = np.random.default_rng([spec.seed, _SPLITS[split], index])
    crops = load_fashion_mnist(spec.fashion_mnist_path)[split] if spec.objects == "fashion_mnist" else None
    img, objects = render_image(rng, spec.width, spec.height, crops=crops, objects_per_image=spec.objects_per_image,
                                object_size=spec.object_size, clutter=spec.clutter, profile=spec.profile)
    image_id = _image_id(split, index)
    ok, encoded = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
    assert ok
    (Path(out_dir) / "JPEGImages" / f"{image_id}.jpg").write_bytes(encoded.tobytes())
    xml = _voc_xml(image_id, spec.width, spec.height, objects, spec.classes)
    (Path(out_dir) / "Annotations" / f"{image_id}.xml").write_text(xml)
    return objects


def _coco_json(split, count, spec: SyntheticSpec, all_objects) -> dict:
    images, annotations = [], []
    for index, objects in enumerate(all_objects):
        image_id = index + 1
        images.append({"id": image_id, "file_name": f"{_image_id(split, index)}.jpg",
                       "width": spec.width, "height": spec.height})
        for label, (x0, y0, x1, y1) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
    supercategory = "synthetic" if spec.objects == "drawn" else spec.objects
    categories = [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(spec.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate(out_dir: str | Path, spec: SyntheticSpec, workers: int | None = None,
             progress: Callable[[str, int], object] | None = None) -> Path:
    """Write the data set described by ``spec`` into ``out_dir`` (which must not exist yet).

    The set is built in a temporary folder beside ``out_dir`` and renamed into place at the end,
    so an interrupted run never leaves a half-written set that looks complete.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it or choose another --out")
    if spec.objects == "fashion_mnist":
        load_fashion_mnist(spec.fashion_mnist_path)  # fail before writing; forked workers inherit it
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "annotations"):
            (tmp / sub).mkdir(parents=True)
        workers = workers or min(os.cpu_count() or 1, 8)
        for split, count in (("trainval", spec.train), ("test", spec.test)):
            jobs = [(str(tmp), spec.to_json(), split, i) for i in range(count)]
            if workers > 1 and count > 64:
                with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
                    all_objects = pool.map(_generate_one, jobs, chunksize=64)
            else:
                all_objects = [_generate_one(job) for job in jobs]
            ids = "".join(f"{_image_id(split, i)}\n" for i in range(count))
            (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
            coco = _coco_json(split, count, spec, all_objects)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
            if progress:
                progress(split, count)
        (tmp / "synthetic.json").write_text(json.dumps({"classes": spec.classes, **spec.to_json()}, indent=2) + "\n")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_spec(root: str | Path) -> SyntheticSpec | None:
    """The spec of a complete generated set at ``root``, or None if there is none."""
    marker = Path(root) / "synthetic.json"
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    data.pop("classes", None)
    return SyntheticSpec(**data)


def ensure_generated(root: str | Path, spec: SyntheticSpec) -> Path:
    """Generate the set at ``root`` unless a complete one with the same spec is already there.

    This is the one place where a config's missing synthetic data is created, so a new user's
    first command can be the demo itself. Concurrent callers (DDP ranks) are safe: each builds
    in its own temporary folder and only the first rename wins.
    """
    root = Path(root)
    existing = read_spec(root)
    if existing == spec:
        return root
    if existing is not None or (root.exists() and any(root.iterdir())):
        found = f"generated with {existing}" if existing else "not a complete synthetic set"
        raise FileExistsError(
            f"{root} exists but is {found}; the config asks for {spec}. "
            f"Delete {root} or point the config's root elsewhere."
        )
    if root.exists():
        root.rmdir()
    from ...util.logger import get_logger

    get_logger().info("generating the synthetic benchmark at %s (%d train, %d test images)...",
                      root, spec.train, spec.test)
    try:
        generate(root, spec)
    except (FileExistsError, OSError):
        if read_spec(root) != spec:  # someone else finished first with the same spec: fine
            raise
    return root
