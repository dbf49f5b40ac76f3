"""Detect objects in an image or a folder of images and save copies with the boxes drawn.

    python tools/inference.py cfg/VOC.yml --model workspace/VOC/model_best.ckpt \
        --path IMAGE_OR_DIR --save-dir out/ [--score 0.35] [--device cuda]
    nanodet-inference cfg/VOC.yml ... # the same, from any directory, after pip install -e .
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from nanodet.data.collate import collate_and_pad
from nanodet.data.transform import Pipeline
from nanodet.model.arch import build_model
from nanodet.trainer.builders import inference_device
from nanodet.util import CfgNode, CheckpointError, get_logger, load_model_weight
from nanodet.util.cli import (add_config_arg, add_config_override_arg, add_device_arg, config_from_args, parse_args,
                              run_main)

Detection = tuple[int, float, list[float]]  # (label, score, [x0, y0, x1, y1]) in the image's pixels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class Predictor:
    """A detector plus the val pipeline: BGR image in, boxes in the image's own pixels out."""

    def __init__(self, cfg: CfgNode, model_path: str | Path, device: str | None = "cpu") -> None:
        self.cfg = cfg
        self.device = inference_device(device)
        self.model = build_model(cfg.model)
        load_model_weight(self.model, model_path, strict=True)
        self.model.eval().to(self.device)
        val = cfg.data.val
        self.pipeline = Pipeline(val.pipeline, val.keep_ratio, augment=False)
        self.input_size = tuple(val.input_size)

    @torch.no_grad()
    def __call__(self, img: np.ndarray, img_id: int = 0) -> list[Detection]:
        """Detections of one BGR image: list of (label, score, [x0, y0, x1, y1])."""
        height, width = img.shape[:2]
        meta = {
            "img": img,
            "img_info": {"file_name": "", "height": height, "width": width, "id": img_id},
            "gt_bboxes": np.zeros((0, 4), np.float32),
            "gt_labels": np.zeros((0,), np.int64),
        }
        meta = self.pipeline(None, meta, self.input_size)
        meta["img"] = torch.from_numpy(np.ascontiguousarray(meta["img"].transpose(2, 0, 1)))
        batch = collate_and_pad([meta], divisible=32)
        batch["img"] = batch["img"].to(self.device)
        results = self.model.inference(batch)[img_id]
        return [(label, float(box[4]), [float(v) for v in box[:4]])
                for label, boxes in results.items() for box in boxes]


MIN_DRAWN_SIDE = 480  # smaller images are enlarged before drawing, so labels stay legible


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box: tuple[int, int, int, int], text_size: tuple[int, int], image_size: tuple[int, int],
                taken: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Where a box's label goes, (x0, y0, x1, y1) inside the image (width, height): above the box,
    inside its top or below it, the first place no rectangle of ``taken`` covers (else above)."""
    (x0, y0, _, y1), (tw, th), (width, height) = box, text_size, image_size
    left = min(max(x0, 0), max(width - tw - 2, 0))
    tops = [min(max(y, 0), max(height - th - 4, 0)) for y in (y0 - th - 4, y0 + 2, y1 + 2)]
    spots = [(left, top, left + tw + 2, top + th + 4) for top in tops]
    return next((s for s in spots if not any(_boxes_overlap(s, other) for other in taken)), spots[0])


def draw_detections(img: np.ndarray, detections: list[Detection], class_names: Sequence[str],
                    score_threshold: float) -> np.ndarray:
    """A copy of ``img`` with the detections scoring at least ``score_threshold`` drawn, highest
    first. An image whose shorter side is under ``MIN_DRAWN_SIDE`` is enlarged by a whole factor
    first (a 160 px image to 480 px); each label goes above its box, inside its top or below it,
    whichever place no earlier label covers."""
    factor = max(1, -(-MIN_DRAWN_SIDE // max(min(img.shape[:2]), 1)))
    img = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST) if factor > 1 else img.copy()
    height, width = img.shape[:2]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    labels_drawn: list[tuple[int, int, int, int]] = []
    for label, score, box in sorted(detections, key=lambda d: -d[1]):
        if score < score_threshold:
            continue
        hue = int(179 * label / max(len(class_names), 1))
        color = tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
        x0, y0, x1, y1 = (int(round(v * factor)) for v in box)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 2)
        text = f"{class_names[label]} {score:.2f}"
        text_size, _ = cv2.getTextSize(text, font, font_scale, 1)
        spot = place_label((x0, y0, x1, y1), text_size, (width, height), labels_drawn)
        labels_drawn.append(spot)
        cv2.rectangle(img, spot[:2], spot[2:], color, -1)
        cv2.putText(img, text, (spot[0] + 1, spot[3] - 3), font, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def list_images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise SystemExit(f"error: --path {path} does not exist")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--model", required=True, help="checkpoint (.ckpt) or weights (.pth)")
    parser.add_argument("--path", required=True, help="an image or a folder of images")
    parser.add_argument("--save-dir", required=True, help="folder for the annotated images")
    parser.add_argument("--score", type=float, default=0.35, help="draw boxes scoring at least this")
    add_device_arg(parser, default="cuda if available", one_device=True)
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    try:
        predictor = Predictor(cfg, args.model, args.device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None

    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    images = list_images(Path(args.path))
    for index, image_path in enumerate(images):
        img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if img is None:
            get_logger().warning("skipping %s: not a readable image", image_path)
            continue
        detections = predictor(img, img_id=index)
        kept = sum(score >= args.score for _, score, _ in detections)
        cv2.imwrite(str(save_dir / image_path.name), draw_detections(img, detections, cfg.class_names, args.score))
        best = max((score for _, score, _ in detections), default=None)
        hint = (f" (the highest scores {best:.2f}: a lower --score draws more)"
                if kept == 0 and best is not None else "")
        get_logger().info("%s: %d detections at or above %.2f%s -> %s", image_path.name, kept, args.score, hint,
                          save_dir / image_path.name)
    return save_dir


def cli() -> None:
    """The command ``nanodet-inference``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
