"""One image: a procedural background with clutter that belongs to no class, objects placed with
bounded truncation and occlusion, painted (drawn shapes or Fashion-MNIST crops), blurred and noisy,
with a tight box for each object."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from .fashion_mnist import CropSource, sample_crop
from .scenes import sample_voc_scene
from .shapes import CLASS_STYLE, hsv_to_bgr, object_texture, sample_drawn
from .spec import MAX_SIZE, MIN_SIZE, SYNTHETIC_CLASSES

MAX_OCCLUDED = 0.5  # a new object may hide at most this fraction of an earlier one
MIN_VISIBLE_IN_IMAGE = 0.4  # truncation keeps at least this fraction of an object in the image


# --------------------------------------------------------------------------- background
def _background(height, width, rng) -> np.ndarray:
    """Gradient or smooth noise, sometimes with stripes or a grid (float32 BGR)."""
    kind = rng.integers(0, 4)
    base = hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(40, 220))
    second = hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(40, 220))
    # Smooth content is made small and resized up: the same look at a fraction of the cost.
    if kind == 0:
        weight = np.linspace(0, 1, 16, dtype=np.float32)[None, :].repeat(16, 0)
        if rng.random() < 0.5:
            weight = weight.T.copy()
    else:
        cells = int(rng.integers(3, 12))
        weight = cv2.resize(rng.uniform(0, 1, (cells, cells)).astype(np.float32), (16, 16),
                            interpolation=cv2.INTER_CUBIC)
    small = base + (second - base) * weight[..., None]
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if kind == 2:
        period = rng.uniform(8, 40)
        img += (np.sin(np.arange(width, dtype=np.float32) * np.float32(2 * np.pi / period)) * 12)[None, :, None]
    elif kind == 3:
        step = int(rng.integers(16, 48))
        img[::step] *= 0.8
        img[:, ::step] *= 0.8
    return img


def _clutter(img: np.ndarray, rng):
    """Things that belong to no class: thin lines, arcs, scribbles, speckles."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(4, 15))):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(0, 4)
        thickness = int(rng.integers(1, 5))
        if kind == 0:
            p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
            p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
            cv2.line(img, p0, p1, color, thickness)
        elif kind == 1:
            center = tuple(int(v) for v in rng.integers(0, [w, h]))
            axes = tuple(int(v) for v in rng.integers(8, 60, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, center, axes, 0, start, start + rng.uniform(40, 200), color, thickness)
        elif kind == 2:
            points = np.cumsum(rng.normal(0, 8, (int(rng.integers(4, 12)), 2)), 0) + rng.integers(0, [w, h])
            cv2.polylines(img, [points.astype(np.int32)], False, color, thickness)
        else:
            n = int(rng.integers(20, 80))
            ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
            img[ys, xs] = color


# --------------------------------------------------------------------------- objects
def _place_objects(rng, width, height, num_objects, sample, labels=None):
    """Sample objects with ``sample(rng)`` (``sample(rng, label)`` for each of ``labels`` when
    given): (class, mask, x, y, payload) with truncation and occlusion kept in bounds. An object
    that finds no place in 20 attempts is left out."""
    occupancy = np.full((height, width), -1, np.int32)  # which object owns each pixel so far
    areas, placed = [], []
    for index in range(num_objects if labels is None else len(labels)):
        for _attempt in range(20):
            label, mask, payload = sample(rng) if labels is None else sample(rng, label=labels[index])
            mh, mw = mask.shape
            x = int(rng.integers(-mw // 2, width - mw // 2))
            y = int(rng.integers(-mh // 2, height - mh // 2))
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, width), min(y + mh, height)
            if x1 <= x0 or y1 <= y0:
                continue
            inside = mask[y0 - y:y1 - y, x0 - x:x1 - x].astype(bool)
            if inside.sum() < MIN_VISIBLE_IN_IMAGE * mask.sum() or inside.sum() < 30:
                continue
            owners = occupancy[y0:y1, x0:x1][inside]
            hidden = np.bincount(owners[owners >= 0], minlength=len(placed)) if len(placed) else []
            if any(hidden[i] > MAX_OCCLUDED * areas[i] for i in range(len(placed))):
                continue
            region = occupancy[y0:y1, x0:x1]
            region[inside] = index
            areas.append(int(inside.sum()))
            placed.append((label, mask, x, y, payload))
            break
    return placed, occupancy


def _paint_crop(region, inside, payload, rng):
    """Composite a tinted crop over ``region`` by its alpha; ``inside`` cuts it to the image."""
    alpha, shade = payload
    tint = hsv_to_bgr(rng.uniform(0, 180), rng.uniform(40, 230), rng.uniform(140, 255))
    a = alpha[inside][..., None]
    # Painted over everything in placement order: later objects cover earlier ones, and a crop's
    # soft edge blends with what lies beneath it.
    region *= 1 - a
    region += a * (shade[inside][..., None] * tint)


def render_image(rng: np.random.Generator, width: int, height: int, clean: bool = False,
                 crops: CropSource | None = None, objects_per_image: tuple[int, int] = (1, 8),
                 object_size: tuple[int, int] = (MIN_SIZE, MAX_SIZE), clutter: bool = True,
                 profile: str = "dense") -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """One image (BGR uint8) and its objects as (label, [x0, y0, x1, y1]) with tight boxes.

    ``crops`` (one split of ``load_fashion_mnist``) draws real crops as the objects; None draws
    the shape classes. ``clean`` draws the objects on a black background without clutter, blur or
    noise, so tests can check boxes against the drawn pixels; ``clutter`` False leaves out only
    the clutter. ``profile`` "voc" draws a VOC-shaped scene (scenes.py) instead of
    ``objects_per_image`` objects of uniform classes.
    """
    img = np.zeros((height, width, 3), np.float32) if clean else _background(height, width, rng)
    if clutter and not clean:
        _clutter(img, rng)
    sample = (partial(sample_drawn, size_range=object_size) if crops is None
              else partial(sample_crop, crops=crops, size_range=object_size))
    if profile == "voc":
        placed, occupancy = _place_objects(rng, width, height, 0, sample, labels=sample_voc_scene(rng))
    else:
        num_objects = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        placed, occupancy = _place_objects(rng, width, height, num_objects, sample)
    objects = []
    for index, (label, mask, x, y, payload) in enumerate(placed):
        mh, mw = mask.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, width), min(y + mh, height)
        region = img[y0:y1, x0:x1]
        if crops is None:
            _, texture, hue, _, _ = CLASS_STYLE[SYNTHETIC_CLASSES[label]]
            # Later objects occlude earlier ones, so paint only the pixels this object still owns.
            owned = occupancy[y0:y1, x0:x1] == index
            tex = object_texture(texture, (y1 - y0, x1 - x0), hue, rng)
            region[owned] = tex[owned] * rng.uniform(0.6, 1.2)
        else:
            _paint_crop(region, np.s_[y0 - y:y1 - y, x0 - x:x1 - x], payload, rng)
        # The box is tight around the object's full extent inside the image (occluded parts
        # included, as an annotator would draw it; truncated parts excluded).
        full = mask[y0 - y:y1 - y, x0 - x:x1 - x]
        ys, xs = np.nonzero(full)
        box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
        objects.append((label, box))
    if clean:
        return np.clip(img, 0, 255).astype(np.uint8), objects
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    # Sensor noise from OpenCV's generator (numpy's is 20x slower here), seeded from ours.
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    noise = np.empty_like(img)
    cv2.randn(noise, 0.0, float(rng.uniform(3, 12)))
    img += noise
    return np.clip(img, 0, 255, out=img).astype(np.uint8), objects
