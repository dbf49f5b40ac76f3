"""A deterministic synthetic 20-class detection benchmark that stands in for VOC2007.

Every class has its own identity (a shape, a texture and a colour scheme) and real intra-class
variation (size 12-200 px, aspect, rotation, colour, texture phase and scale, partial occlusion,
truncation at the border). A few pairs are deliberately confusable (hexagon / octagon, disc /
ring, square / frame, pentagon / hexagon, cross / T-shape). Backgrounds are procedural
(gradients, smooth noise, stripes, grids) with clutter that belongs to no class (lines, arcs,
scribbles, speckles). Each image holds 1 to 8 objects of several classes, so in a continual task
old objects appear unlabeled, as in VOC.

Output (VOC layout plus COCO JSON; the same arguments give byte-identical files):

    DIR/JPEGImages/{id}.jpg
    DIR/Annotations/{id}.xml
    DIR/ImageSets/Main/trainval.txt, test.txt
    DIR/annotations/trainval.json, test.json
    DIR/synthetic.json         # the generation arguments; written last, marks a complete set

Boxes are tight around each object's pixels inside the image, in continuous pixel coordinates
(a box [x0, y0, x1, y1] covers pixel columns x0 .. x1-1), identical in the XML and the JSON.

With ``SyntheticSpec(objects="fashion_mnist")`` the objects are real images instead: the 10
Fashion-MNIST classes (70,000 grey 28x28 crops, read from the IDX files of Debian's
``dataset-fashion-mnist`` package or of a folder you name), each crop scaled, sometimes rotated,
tinted and composited by its grey level onto the same backgrounds with the same clutter,
occlusion and truncation rules. The trainval split draws from the 60,000 training crops and the
test split from the 10,000 t10k crops, so test objects are images the detector never saw.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

SYNTHETIC_CLASSES = [
    "disc", "ring", "square", "frame", "triangle", "diamond", "cross", "star", "hexagon",
    "octagon", "pentagon", "crescent", "arrow", "bar", "lshape", "tshape", "checker", "target",
    "bowtie", "drop",
]

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

# Fashion-MNIST's labels 0-9, named without slashes or spaces so they work as VOC/COCO names.
FASHION_MNIST_CLASSES = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankleboot",
]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
# Split -> (images file, labels file), each read raw or with a .gz suffix.
FASHION_MNIST_FILES = {
    "trainval": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
OBJECT_CLASSES = {"drawn": SYNTHETIC_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}

MIN_SIZE, MAX_SIZE = 12, 200
MAX_OCCLUDED = 0.5  # a new object may hide at most this fraction of an earlier one
MIN_VISIBLE_IN_IMAGE = 0.4  # truncation keeps at least this fraction of an object in the image


@dataclass(frozen=True)
class SyntheticSpec:
    """The arguments that fully determine a generated data set.

    ``objects`` is "drawn" (the 20 shape classes) or "fashion_mnist" (the 10 Fashion-MNIST
    classes from real crops). ``fashion_mnist_path`` says where to read the IDX files (default:
    Debian's package folder); it is where the data lives, not what the set is, so two specs that
    differ only in it are equal.
    """

    train: int = 6000
    test: int = 1000
    seed: int = 0
    width: int = 320
    height: int = 320
    jpeg_quality: int = 90
    version: int = 2  # bump when the generator's output changes (2: harder colours, more clutter)
    objects: str = "drawn"
    fashion_mnist_path: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.objects not in OBJECT_CLASSES:
            raise ValueError(f"SyntheticSpec objects must be one of {sorted(OBJECT_CLASSES)}, got {self.objects!r}")

    @property
    def classes(self) -> list:
        """The class names of the set, in label order."""
        return OBJECT_CLASSES[self.objects]

    def to_json(self) -> dict:
        # Fields added after version 1 are left out at their defaults, so drawn-mode markers
        # (synthetic.json) stay byte-identical to those written before the fields existed.
        data = asdict(self)
        for name in ("objects", "fashion_mnist_path"):
            if data[name] == _FIELD_DEFAULTS[name]:
                del data[name]
        return data


_FIELD_DEFAULTS = {f.name: f.default for f in fields(SyntheticSpec)}


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
def _hsv_to_bgr(h, s, v) -> np.ndarray:
    pixel = np.uint8([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]])
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _texture(kind: str, shape, hue: float, rng) -> np.ndarray:
    """A BGR float32 texture of ``shape`` (h, w) in the class's colour scheme."""
    h, w = shape
    # Wide hue jitter: neighbouring classes overlap in colour, so shape has to decide.
    main = _hsv_to_bgr(hue + rng.normal(0, 15), rng.uniform(90, 255), rng.uniform(90, 255))
    other = _hsv_to_bgr(hue + 90 + rng.normal(0, 10), rng.uniform(60, 200), rng.uniform(60, 230))
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


def _background(height, width, rng) -> np.ndarray:
    """Gradient or smooth noise, sometimes with stripes or a grid (float32 BGR)."""
    kind = rng.integers(0, 4)
    base = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(40, 220))
    second = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(40, 220))
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


# --------------------------------------------------------------------------- Fashion-MNIST
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (raw or gzipped, told apart by its first bytes) as a numpy array.

    Raises ValueError naming the file if it is not IDX (bad magic number or type code) or holds
    fewer or more bytes than its header says.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # a bad .gz header, a cut .gz, corrupt compressed data
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: unreadable IDX file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: truncated or padded IDX file: {len(data)} bytes, the header "
                         f"({shape}, {dtype}) says {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def find_fashion_mnist(path: str | Path | None = None) -> dict:
    """The 4 Fashion-MNIST IDX files, {standard name: path}, in ``path`` or Debian's folder.

    Each may be raw or gzipped (``.gz``). Raises FileNotFoundError saying how to get them.
    """
    folder = Path(path if path is not None else FASHION_MNIST_DIR)
    found, missing = {}, []
    for name in (n for pair in FASHION_MNIST_FILES.values() for n in pair):
        candidates = [folder / name, folder / f"{name}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    if missing:
        where = (f"the folder {folder} (fashion_mnist_path)" if path is not None
                 else f"{folder}, where Debian's dataset-fashion-mnist package puts them,")
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files {missing} (raw or .gz) not found in {where}. "
            f"Install them with `apt-get install dataset-fashion-mnist`, or pass the folder holding "
            f"the 4 files (train/t10k images-idx3-ubyte and labels-idx1-ubyte) as fashion_mnist_path "
            f"(--fashion-mnist-path)."
        )
    return found


@dataclass(frozen=True)
class CropSource:
    """The grey crops of one split, indexed by class for balanced sampling."""

    images: np.ndarray  # (n, rows, cols) uint8, object bright on black
    by_class: tuple  # per label, the indices of its crops


_CROP_CACHE: dict = {}  # fashion_mnist_path -> {split: CropSource}; one load per process


def load_fashion_mnist(path: str | Path | None = None) -> dict:
    """{split: CropSource} for "trainval" (train files) and "test" (t10k files), loaded once.

    Forked workers inherit what the parent loaded; spawned ones load once each.
    """
    key = None if path is None else str(path)
    if key not in _CROP_CACHE:
        files = find_fashion_mnist(path)
        sources = {}
        for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
            images, labels = read_idx(files[images_name]), read_idx(files[labels_name])
            if images.ndim != 3 or images.dtype != np.uint8:
                raise ValueError(f"{files[images_name]}: expected (n, rows, cols) uint8 images, "
                                 f"got {images.shape} {images.dtype}")
            if labels.ndim != 1 or len(labels) != len(images):
                raise ValueError(f"{files[labels_name]}: expected {len(images)} labels for "
                                 f"{files[images_name]}, got shape {labels.shape}")
            by_class = tuple(np.flatnonzero(labels == c) for c in range(len(FASHION_MNIST_CLASSES)))
            absent = [FASHION_MNIST_CLASSES[c] for c, idx in enumerate(by_class) if len(idx) == 0]
            stray = int(np.sum((labels < 0) | (labels >= len(FASHION_MNIST_CLASSES))))
            if absent or stray:
                raise ValueError(f"{files[labels_name]}: labels must cover classes 0-9; "
                                 f"no crops of {absent}, {stray} labels out of range")
            sources[split] = CropSource(images, by_class)
        _CROP_CACHE[key] = sources
    return _CROP_CACHE[key]


CROP_ALPHA_FLOOR = 12  # grey levels below this are the crop's black background: transparent
CROP_ALPHA_FULL = 48  # ...and from this up fully opaque, with a ramp between for soft edges
CROP_SHADE_MIN = 0.35  # the darkest parts of a crop keep this fraction of the tint
CROP_STRETCH = (0.8, 1.25)  # mild aspect change on top of the crop's own
CROP_FREE_ROTATION = 0.25  # probability of any angle; otherwise a small tilt


def _crop_patch(grey: np.ndarray, size: float, stretch: float, angle: float):
    """One crop scaled so its longer side is ``size``, rotated: (mask, alpha, shade), tightly cut."""
    ys, xs = np.nonzero(grey >= CROP_ALPHA_FLOOR)
    if len(xs):
        grey = grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    th, tw = grey.shape
    scale = size / max(th, tw)
    w, h = tw * scale * math.sqrt(stretch), th * scale / math.sqrt(stretch)
    shrink = MAX_SIZE / max(w, h) if max(w, h) > MAX_SIZE else 1.0
    sx, sy = max(w * shrink, 1.0) / tw, max(h * shrink, 1.0) / th
    side = int(math.ceil(math.hypot(tw * sx, th * sy))) + 4
    # Source pixel centres -> destination: scale about the crop's centre, rotate, move to the patch's centre.
    cos, sin = math.cos(angle), math.sin(angle)
    linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    offset = np.array([side / 2, side / 2]) - linear @ np.array([tw / 2, th / 2])
    warp = np.hstack([linear, (offset + linear @ [0.5, 0.5] - 0.5)[:, None]])
    patch = cv2.warpAffine(grey, warp, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = (patch >= CROP_ALPHA_FLOOR).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        mask[side // 2, side // 2] = 1
        patch[side // 2, side // 2] = CROP_ALPHA_FULL
        ys, xs = np.nonzero(mask)
    cut = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    patch = patch[cut].astype(np.float32)
    alpha = np.clip(patch * np.float32(1 / CROP_ALPHA_FULL), 0, 1) * mask[cut]
    shade = CROP_SHADE_MIN + (1 - CROP_SHADE_MIN) * patch * np.float32(1 / 255)
    return mask[cut], alpha, shade


def _sample_crop(rng, crops: CropSource):
    """A real crop of a random class: (label, mask, (alpha, shade))."""
    label = int(rng.integers(0, len(crops.by_class)))
    pool = crops.by_class[label]
    grey = crops.images[pool[int(rng.integers(0, len(pool)))]]
    size = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))
    stretch = math.exp(rng.uniform(math.log(CROP_STRETCH[0]), math.log(CROP_STRETCH[1])))
    angle = rng.uniform(0, 2 * math.pi) if rng.random() < CROP_FREE_ROTATION else rng.normal(0, 0.15)
    mask, alpha, shade = _crop_patch(grey, size, stretch, angle)
    return label, mask, (alpha, shade)


# --------------------------------------------------------------------------- one image
def _sample_drawn(rng):
    """A drawn shape of a random class: (label, mask, None)."""
    label = int(rng.integers(0, len(SYNTHETIC_CLASSES)))
    outline, _, _, aspect_range, rotates = CLASS_STYLE[SYNTHETIC_CLASSES[label]]
    size = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))
    aspect = math.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1])))
    w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
    scale = MAX_SIZE / max(w, h) if max(w, h) > MAX_SIZE else 1.0
    w, h = w * scale, h * scale
    angle = rng.uniform(0, 2 * math.pi) if rotates else rng.normal(0, 0.15)
    return label, _object_mask(outline, w, h, angle, rng), None


def _place_objects(rng, width, height, num_objects, sample):
    """Sample objects with ``sample(rng)``: (class, mask, x, y, payload) with truncation and
    occlusion kept in bounds."""
    occupancy = np.full((height, width), -1, np.int32)  # which object owns each pixel so far
    areas, placed = [], []
    for index in range(num_objects):
        for _attempt in range(20):
            label, mask, payload = sample(rng)
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
    tint = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(40, 230), rng.uniform(140, 255))
    a = alpha[inside][..., None]
    # Painted over everything in placement order: later objects cover earlier ones, and a crop's
    # soft edge blends with what lies beneath it.
    region *= 1 - a
    region += a * (shade[inside][..., None] * tint)


def render_image(rng, width, height, clean: bool = False, crops: CropSource | None = None):
    """One image (BGR uint8) and its objects as (label, [x0, y0, x1, y1]) with tight boxes.

    ``crops`` (one split of ``load_fashion_mnist``) draws real crops as the objects; None draws
    the shape classes. ``clean`` draws the objects on a black background without clutter, blur or
    noise, so tests can check boxes against the drawn pixels.
    """
    img = np.zeros((height, width, 3), np.float32) if clean else _background(height, width, rng)
    if not clean:
        _clutter(img, rng)
    sample = _sample_drawn if crops is None else (lambda r: _sample_crop(r, crops))
    placed, occupancy = _place_objects(rng, width, height, int(rng.integers(1, 9)), sample)
    objects = []
    for index, (label, mask, x, y, payload) in enumerate(placed):
        mh, mw = mask.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, width), min(y + mh, height)
        region = img[y0:y1, x0:x1]
        if crops is None:
            _, texture, hue, _, _ = CLASS_STYLE[SYNTHETIC_CLASSES[label]]
            # Later objects occlude earlier ones, so paint only the pixels this object still owns.
            owned = occupancy[y0:y1, x0:x1] == index
            tex = _texture(texture, (y1 - y0, x1 - x0), hue, rng)
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


# --------------------------------------------------------------------------- writing
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
    img, objects = render_image(rng, spec.width, spec.height, crops=crops)
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


def generate(out_dir: str | Path, spec: SyntheticSpec, workers: int | None = None, progress=None) -> Path:
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
    from ..util.logger import get_logger

    get_logger().info("generating the synthetic benchmark at %s (%d train, %d test images)...",
                      root, spec.train, spec.test)
    try:
        generate(root, spec)
    except (FileExistsError, OSError):
        if read_spec(root) != spec:  # someone else finished first with the same spec: fine
            raise
    return root
