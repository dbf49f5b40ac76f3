"""Fashion-MNIST as objects: reading the IDX files (raw or gzipped), finding them, and turning a
grey 28x28 crop into a scaled, rotated object with a soft alpha edge."""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .spec import FASHION_MNIST_CLASSES, MAX_SIZE, MIN_SIZE

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
# Split -> (images file, labels file), each read raw or with a .gz suffix.
FASHION_MNIST_FILES = {
    "trainval": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

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


# --------------------------------------------------------------------------- crops as objects
CROP_ALPHA_FLOOR = 12  # grey levels below this are the crop's black background: transparent
CROP_ALPHA_FULL = 48  # ...and from this up fully opaque, with a ramp between for soft edges
CROP_SHADE_MIN = 0.35  # the darkest parts of a crop keep this fraction of the tint
CROP_STRETCH = (0.8, 1.25)  # mild aspect change on top of the crop's own
CROP_FREE_ROTATION = 0.25  # probability of any angle; otherwise a small tilt


def _crop_patch(grey: np.ndarray, size: float, stretch: float, angle: float, max_size: float = MAX_SIZE):
    """One crop scaled so its longer side is ``size``, rotated: (mask, alpha, shade), tightly cut."""
    ys, xs = np.nonzero(grey >= CROP_ALPHA_FLOOR)
    if len(xs):
        grey = grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    th, tw = grey.shape
    scale = size / max(th, tw)
    w, h = tw * scale * math.sqrt(stretch), th * scale / math.sqrt(stretch)
    shrink = max_size / max(w, h) if max(w, h) > max_size else 1.0
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


def sample_crop(rng: np.random.Generator, crops: CropSource, size_range: tuple[int, int] = (MIN_SIZE, MAX_SIZE),
                ) -> tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A real crop of a random class, its longer side log-uniform in ``size_range``: (label, mask, (alpha, shade))."""
    label = int(rng.integers(0, len(crops.by_class)))
    pool = crops.by_class[label]
    grey = crops.images[pool[int(rng.integers(0, len(pool)))]]
    size = math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1])))
    stretch = math.exp(rng.uniform(math.log(CROP_STRETCH[0]), math.log(CROP_STRETCH[1])))
    angle = rng.uniform(0, 2 * math.pi) if rng.random() < CROP_FREE_ROTATION else rng.normal(0, 0.15)
    mask, alpha, shade = _crop_patch(grey, size, stretch, angle, max_size=size_range[1])
    return label, mask, (alpha, shade)
