"""The 20 drawn classes: each one's outline, texture and colour scheme, and a random object of one
of them as a tight binary mask."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .spec import MAX_SIZE, MIN_SIZE, SYNTHETIC_CLASSES

# Per class: outline, texture, base hue (OpenCV 0-179), aspect range, whether it rotates freely.
# Confusable pairs share outline families and overlapping hues on purpose.
CLASS_STYLE = {
    "disc":     ("ellipse",  "solid",   10, (0.8, 1.25), True),
    "ring":     ("ring",     "solid",   16, (0.8, 1.25), True),
    "square":   ("square",   "noise",  100, (0.8, 1.25), True),
    "frame":    ("frame",    "noise",  105, (0.8, 1.25), True),
    "triangle": ("triangle", "solid",   60, (0.7, 1.4), True),
    "diamond":  ("diamond",  "stripes", 150, (0.6, 1.0), False),
    "cross":    ("cross",    "solid",  170, (0.8, 1.25), True),
    "star":     ("star",     "solid",   28, (0.9, 1.1), True),
    "hexagon":  ("hexagon",  "dots",    80, (0.9, 1.1), True),
    "octagon":  ("octagon",  "dots",    88, (0.9, 1.1), True),
    "pentagon": ("pentagon", "dots",    70, (0.9, 1.1), True),
    "crescent": ("crescent", "gradient", 40, (0.8, 1.25), True),
    "arrow":    ("arrow",    "stripes", 125, (1.4, 2.2), True),
    "bar":      ("bar",      "gradient", 0, (3.0, 6.0), True),
    "lshape":   ("lshape",   "solid",  135, (0.8, 1.25), True),
    "tshape":   ("tshape",   "solid",  165, (0.8, 1.25), True),
    "checker":  ("square",   "checker", 115, (0.8, 1.25), True),
    "target":   ("target",   "solid",   50, (0.9, 1.1), False),
    "bowtie":   ("bowtie",   "stripes", 95, (1.3, 2.0), True),
    "drop":     ("drop",     "gradient", 140, (0.6, 0.8), True),
}


# --------------------------------------------------------------------------- outlines
def _regular_polygon(n, rotation=0.0):
    angles = rotation + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], 1) * 0.5


def _outline_polygons(outline: str):
    """Unit outline(s) in [-0.5, 0.5]^2 as (filled polygons, holes); None for drawn shapes."""
    square = np.array([[-.5, -.5], [.5, -.5], [.5, .5], [-.5, .5]])
    shapes = {
        "square": ([square], []),
        "frame": ([square], [square * 0.6]),
        "triangle": ([np.array([[0, -.5], [.5, .5], [-.5, .5]])], []),
        "diamond": ([np.array([[0, -.5], [.5, 0], [0, .5], [-.5, 0]])], []),
        "cross": ([np.array([[-.5, -.17], [.5, -.17], [.5, .17], [-.5, .17]]),
                   np.array([[-.17, -.5], [.17, -.5], [.17, .5], [-.17, .5]])], []),
        "hexagon": ([_regular_polygon(6)], []),
        "octagon": ([_regular_polygon(8, np.pi / 8)], []),
        "pentagon": ([_regular_polygon(5, -np.pi / 2)], []),
        "star": ([np.array([(0.5 if i % 2 == 0 else 0.2) * np.array(
            [np.cos(-np.pi / 2 + i * np.pi / 5), np.sin(-np.pi / 2 + i * np.pi / 5)]) for i in range(10)])], []),
        "arrow": ([np.array([[-.5, -.15], [.1, -.15], [.1, -.4], [.5, 0], [.1, .4], [.1, .15], [-.5, .15]])], []),
        "bar": ([square], []),
        "lshape": ([np.array([[-.5, -.5], [-.15, -.5], [-.15, .15], [.5, .15], [.5, .5], [-.5, .5]])], []),
        "tshape": ([np.array([[-.5, -.5], [.5, -.5], [.5, -.18], [.17, -.18], [.17, .5], [-.17, .5],
                              [-.17, -.18], [-.5, -.18]])], []),
        "bowtie": ([np.array([[-.5, -.5], [0, -.08], [.5, -.5], [.5, .5], [0, .08], [-.5, .5]])], []),
    }
    return shapes.get(outline)


def _object_mask(outline: str, w: float, h: float, angle: float, rng) -> np.ndarray:
    """A binary mask (uint8 0/1) of one object on its own patch, tightly cropped."""
    side = int(math.ceil(math.hypot(w, h))) + 4
    mask = np.zeros((side, side), np.uint8)
    center = np.array([side / 2, side / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def to_pixels(unit):
        return np.round((unit * [w, h]) @ rot.T + center).astype(np.int32)

    polygons = _outline_polygons(outline)
    if polygons is not None:
        filled, holes = polygons
        for polygon in filled:  # one call each: fillPoly XORs overlapping polygons
            cv2.fillPoly(mask, [to_pixels(polygon)], 1)
        if holes:
            cv2.fillPoly(mask, [to_pixels(p) for p in holes], 0)
    else:
        c = (int(round(center[0])), int(round(center[1])))
        axes = (max(int(round(w / 2)), 1), max(int(round(h / 2)), 1))
        deg = math.degrees(angle)
        cv2.ellipse(mask, c, axes, deg, 0, 360, 1, -1)
        if outline == "ring":
            inner = (max(int(axes[0] * rng.uniform(0.45, 0.6)), 1), max(int(axes[1] * rng.uniform(0.45, 0.6)), 1))
            cv2.ellipse(mask, c, inner, deg, 0, 360, 0, -1)
        elif outline == "crescent":
            shift = to_pixels(np.array([[0.3, -0.1]]))[0]
            cv2.ellipse(mask, (int(shift[0]), int(shift[1])), axes, deg, 0, 360, 0, -1)
        elif outline == "target":
            for ratio, value in ((0.7, 0), (0.45, 1), (0.2, 0)):
                inner = (max(int(axes[0] * ratio), 1), max(int(axes[1] * ratio), 1))
                cv2.ellipse(mask, c, inner, deg, 0, 360, value, -1)
        elif outline == "drop":
            tip = to_pixels(np.array([[0.0, -0.5]]))[0]
            base = to_pixels(np.array([[-0.42, 0.05], [0.42, 0.05]]))
            cv2.fillPoly(mask, [np.array([tip, base[1], base[0]], np.int32)], 1)
            cv2.ellipse(mask, tuple(int(v) for v in to_pixels(np.array([[0, 0.2]]))[0]),
                        (max(int(w * 0.42), 1), max(int(h * 0.3), 1)), deg, 0, 360, 1, -1)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        mask[side // 2, side // 2] = 1
        ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


# --------------------------------------------------------------------------- textures
def hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    pixel = np.uint8([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]])
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def object_texture(kind: str, shape: tuple[int, int], hue: float, rng: np.random.Generator) -> np.ndarray:
    """A BGR float32 texture of ``shape`` (h, w) in the class's colour scheme."""
    h, w = shape
    # Wide hue jitter: neighbouring classes overlap in colour, so shape has to decide.
    main = hsv_to_bgr(hue + rng.normal(0, 15), rng.uniform(90, 255), rng.uniform(90, 255))
    other = hsv_to_bgr(hue + 90 + rng.normal(0, 10), rng.uniform(60, 200), rng.uniform(60, 230))
    if kind == "solid":
        tex = np.broadcast_to(main, (h, w, 3)).copy()
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, 10)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        if kind == "stripes":
            weight = (np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3)) > 0).astype(np.float32)
        elif kind == "checker":
            v = -xx * math.sin(theta) + yy * math.cos(theta)
            weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        elif kind == "dots":
            v = -xx * math.sin(theta) + yy * math.cos(theta)
            weight = ((np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2
                      < (period * 0.3) ** 2).astype(np.float32)
        elif kind == "gradient":
            weight = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        elif kind == "noise":
            small = rng.uniform(0, 1, (max(h // 6, 2), max(w // 6, 2))).astype(np.float32)
            weight = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            raise ValueError(kind)
        tex = main * (1 - weight[..., None]) + other * weight[..., None]
    return tex



# --------------------------------------------------------------------------- one object
def sample_drawn(rng: np.random.Generator, size_range: tuple[int, int] = (MIN_SIZE, MAX_SIZE),
                 label: int | None = None) -> tuple[int, np.ndarray, None]:
    """A drawn shape of ``label`` (None: a random class), its longer side log-uniform in
    ``size_range``: (label, mask, None)."""
    if label is None:
        label = int(rng.integers(0, len(SYNTHETIC_CLASSES)))
    outline, _, _, aspect_range, rotates = CLASS_STYLE[SYNTHETIC_CLASSES[label]]
    min_size, max_size = size_range
    size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
    aspect = math.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1])))
    w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
    scale = max_size / max(w, h) if max(w, h) > max_size else 1.0
    w, h = w * scale, h * scale
    angle = rng.uniform(0, 2 * math.pi) if rotates else rng.normal(0, 0.15)
    return label, _object_mask(outline, w, h, angle, rng), None
