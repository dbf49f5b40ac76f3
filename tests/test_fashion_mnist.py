"""The synthetic benchmark's Fashion-MNIST mode: IDX reading, finding the files, tight boxes on real crops."""

import gzip
import hashlib
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nanodet.data import synthetic
from nanodet.data.dataset import build_dataset
from nanodet.data.synthetic import fashion_mnist
from nanodet.data.synthetic import (
    FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, SyntheticSpec, find_fashion_mnist, generate,
    load_fashion_mnist, read_idx, read_spec, render_image,
)

PIPELINE = {"normalize": [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]}
DEBIAN_PACKAGE = Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file()


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def fake_crops(per_class: int, seed: int):
    """Crops like Fashion-MNIST's: a bright, shaded object on black with faint sub-threshold specks."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(FASHION_MNIST_CLASSES)):
        for _ in range(per_class):
            crop = np.zeros((28, 28), np.uint8)
            crop[rng.integers(0, 28, 6), rng.integers(0, 28, 6)] = 5  # near-zero: transparent
            h, w = 6 + 2 * label, 20 - label
            y, x = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
            crop[y:y + h, x:x + w] = np.linspace(60, 255, w, dtype=np.uint8)[None, :]
            images.append(crop)
            labels.append(label)
    return np.stack(images), np.array(labels, np.uint8)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    """The 4 standard files: train gzipped, t10k raw (both forms are found)."""
    folder = tmp_path_factory.mktemp("fashion")
    for prefix, per_class, seed, gz in (("train", 3, 0, True), ("t10k", 2, 1, False)):
        images, labels = fake_crops(per_class, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


def fashion_spec(fake_dir, **changes):
    return SyntheticSpec(**{"train": 72, "test": 12, "seed": 5, "width": 128, "height": 112,
                            "objects": "fashion_mnist", "fashion_mnist_path": str(fake_dir), **changes})


def digest_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- IDX files
@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_reads_raw_and_gzipped_files(tmp_path, gz):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    counts = np.array([7, -1, 70000], ">i4")
    assert np.array_equal(read_idx(write_idx(tmp_path / "images", images, gz)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "counts", counts, gz)), counts)


def test_corrupt_idx_files_are_named(tmp_path):
    good = idx_bytes(np.ones((4, 28, 28), np.uint8))
    cases = {
        "bad-magic": b"\x00\x01\x08\x03" + good[4:],
        "truncated": good[:-10],
        "padded": good + b"\x00",
        "cut-header": good[:9],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    compressed = gzip.compress(good)
    (tmp_path / "cut.gz").write_bytes(compressed[:-20])
    (tmp_path / "garbled.gz").write_bytes(compressed[:20] + b"\xff" * 10 + compressed[30:])
    for name in [*cases, "cut.gz", "garbled.gz"]:
        with pytest.raises(ValueError, match=name):
            read_idx(tmp_path / name)


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch, fake_dir):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*fashion-mnist-path"):
        find_fashion_mnist(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-images-idx3-ubyte.gz").write_bytes((fake_dir / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        find_fashion_mnist(partial)
    # Neither a path nor the Debian package: the default folder is named with the apt-get hint.
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", str(tmp_path / "no-package"))
    monkeypatch.setattr(fashion_mnist, "_CROP_CACHE", {})
    with pytest.raises(FileNotFoundError, match=r"no-package.*apt-get install dataset-fashion-mnist"):
        generate(tmp_path / "set", SyntheticSpec(train=2, test=2, objects="fashion_mnist"), workers=1)
    assert not (tmp_path / "set").exists() and list(tmp_path.glob(".set.*")) == []


def test_splits_come_from_train_and_t10k_files(fake_dir):
    sources = load_fashion_mnist(str(fake_dir))
    assert np.array_equal(sources["trainval"].images, fake_crops(3, 0)[0])
    assert np.array_equal(sources["test"].images, fake_crops(2, 1)[0])  # unseen crops for the test split
    assert [len(i) for i in sources["test"].by_class] == [2] * 10


# --------------------------------------------------------------------------- generated sets
@pytest.fixture(scope="module")
def fashion_set(tmp_path_factory, fake_dir):
    return generate(tmp_path_factory.mktemp("fm") / "set", fashion_spec(fake_dir), workers=1)


def test_same_arguments_give_byte_identical_files(fashion_set, fake_dir, tmp_path):
    again = generate(tmp_path / "again", fashion_spec(fake_dir), workers=2)  # 72 images: a process pool
    assert digest_tree(again) == digest_tree(fashion_set)
    other = generate(tmp_path / "other", fashion_spec(fake_dir, seed=6), workers=1)
    assert digest_tree(other) != digest_tree(fashion_set)


def test_marker_lists_the_ten_classes_and_round_trips(fashion_set, fake_dir):
    marker = json.loads((fashion_set / "synthetic.json").read_text())
    assert marker["classes"] == FASHION_MNIST_CLASSES and marker["objects"] == "fashion_mnist"
    assert read_spec(fashion_set) == fashion_spec(fake_dir)
    # Where the files were read from is not what the set is.
    assert read_spec(fashion_set) == fashion_spec(fake_dir, fashion_mnist_path=None)
    # Drawn-mode markers keep exactly the fields they had before the Fashion-MNIST mode existed.
    assert list(SyntheticSpec().to_json()) == ["train", "test", "seed", "width", "height", "jpeg_quality", "version"]


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_voc_and_coco_annotations_agree_on_ten_classes(fashion_set, split):
    coco = json.loads((fashion_set / "annotations" / f"{split}.json").read_text())
    assert [c["name"] for c in coco["categories"]] == FASHION_MNIST_CLASSES
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append((ann["category_id"] - 1, [x, y, x + w, y + h]))
    for image in coco["images"]:
        root = ET.parse(fashion_set / "Annotations" / f"{Path(image['file_name']).stem}.xml").getroot()
        voc = [(FASHION_MNIST_CLASSES.index(o.findtext("name")),
                [int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
               for o in root.iter("object")]
        assert voc == by_image.get(image["id"], [])
        assert 1 <= len(voc) <= 8
        for _, (x0, y0, x1, y1) in voc:
            assert 0 <= x0 < x1 <= image["width"] and 0 <= y0 < y1 <= image["height"]
    assert len({a["category_id"] for a in coco["annotations"]}) >= 8


@pytest.mark.parametrize("seed", range(16))
def test_boxes_are_tight_around_the_opaque_crop_pixels(fake_dir, seed):
    crops = load_fashion_mnist(str(fake_dir))["trainval"]
    img, objects = render_image(np.random.default_rng([7, seed]), 160, 128, clean=True, crops=crops)
    drawn = img.max(axis=2) > 0
    inside = np.zeros_like(drawn)
    for _, (x0, y0, x1, y1) in objects:
        inside[y0:y1, x0:x1] = True
        # Every opaque pixel of a crop is painted (by it or by an object over it), so each edge
        # of every box touches painted pixels.
        crop = drawn[y0:y1, x0:x1]
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
    assert not (drawn & ~inside).any(), "crop pixels outside every box (transparent background drawn?)"


def test_dataset_takes_the_fashion_classes(fashion_set, fake_dir):
    node = {"name": "SyntheticDataset", "root": str(fashion_set), "split": "test",
            "synthetic": fashion_spec(fake_dir).to_json(), "input_size": [128, 112], "pipeline": PIPELINE}
    assert len(build_dataset(node, "val", class_names=FASHION_MNIST_CLASSES)) == 12
    first_five = build_dataset(node, "val", class_names=FASHION_MNIST_CLASSES[:5])
    assert all((record.labels < 5).all() for record in first_five.records)
    with pytest.raises(ValueError, match="class_names"):
        build_dataset(node, "val", class_names=synthetic.SYNTHETIC_CLASSES)


@pytest.mark.skipif(not DEBIAN_PACKAGE, reason="Debian's dataset-fashion-mnist package is not installed")
def test_debian_package_gives_seventy_thousand_crops():
    sources = load_fashion_mnist()
    assert sources["trainval"].images.shape == (60000, 28, 28) and sources["test"].images.shape == (10000, 28, 28)
    assert [len(i) for i in sources["trainval"].by_class] == [6000] * 10
    img, objects = render_image(np.random.default_rng(0), 320, 320, crops=sources["test"])
    assert img.shape == (320, 320, 3) and 1 <= len(objects) <= 8
