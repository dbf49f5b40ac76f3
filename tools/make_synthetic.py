"""Write the synthetic 20-class detection benchmark (VOC layout plus COCO JSON).

    python tools/make_synthetic.py --out data/synthetic_320 --train 5000 --test 2000 --seed 0
    nanodet-make-synthetic --out DIR ...   # the same, from any directory, after pip install -e .

``--objects fashion_mnist`` composes a 10-class set from the real Fashion-MNIST crops instead
(Debian's ``dataset-fashion-mnist`` package, or ``--fashion-mnist-path`` to a folder of its 4 IDX
files, raw or .gz):

    python tools/make_synthetic.py --out data/synthetic_fashion_320 --objects fashion_mnist

Easier or harder sets: ``--objects-per-image LOW HIGH``, ``--object-size LOW HIGH`` and
``--no-clutter`` (cfg/demo.yml's set: 1 3, 32 96, no clutter). ``--profile voc`` draws scenes
shaped like VOC2007 trainval instead (cfg/synthetic.yml's set). The statistics of the training
images are printed at the end.

The same arguments give byte-identical files. Configs that use ``SyntheticDataset`` call the
same generator on first use, so running this by hand is only needed for a custom set.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

from nanodet.data.synthetic import MAX_SIZE, MIN_SIZE, OBJECT_CLASSES, SyntheticSpec, generate
from nanodet.data.synthetic.spec import PROFILES
from nanodet.data.synthetic.statistics import format_statistics, read_labels, set_statistics
from nanodet.util.cli import run_main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument("--train", type=int, default=5000, help="trainval images")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--objects", choices=sorted(OBJECT_CLASSES), default="drawn",
                        help="drawn shapes (20 classes) or real Fashion-MNIST crops (10 classes)")
    parser.add_argument("--fashion-mnist-path", default=None, metavar="DIR",
                        help="folder of the Fashion-MNIST IDX files (default: Debian's package folder)")
    parser.add_argument("--objects-per-image", type=int, nargs=2, default=[1, 8], metavar=("LOW", "HIGH"),
                        help="objects in an image, uniform, both ends included (default 1 8)")
    parser.add_argument("--object-size", type=int, nargs=2, default=[MIN_SIZE, MAX_SIZE], metavar=("LOW", "HIGH"),
                        help=f"longer side of an object in pixels, log-uniform (default {MIN_SIZE} {MAX_SIZE})")
    parser.add_argument("--no-clutter", action="store_true", help="leave out the lines, arcs and speckles")
    parser.add_argument("--profile", choices=PROFILES, default="dense",
                        help="dense: objects-per-image objects of uniform classes; voc: scenes shaped like VOC2007")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    args = parser.parse_args(argv)
    if min(args.train, args.test) < 0 or min(args.width, args.height) < 64:
        parser.error("image counts must be >= 0 and sizes >= 64 pixels")
    try:
        spec = SyntheticSpec(train=args.train, test=args.test, seed=args.seed, width=args.width,
                             height=args.height, jpeg_quality=args.jpeg_quality, objects=args.objects,
                             fashion_mnist_path=args.fashion_mnist_path, objects_per_image=args.objects_per_image,
                             object_size=args.object_size, clutter=not args.no_clutter,
                             profile=args.profile)
    except ValueError as err:
        parser.error(str(err))
    start = time.perf_counter()
    try:
        out = generate(args.out, spec, workers=args.workers,
                       progress=lambda split, n: print(f"{split}: {n} images", flush=True))
    except (FileExistsError, FileNotFoundError, ValueError) as err:  # bad --out or Fashion-MNIST files
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    if spec.objects == "drawn":
        print("trainval:", format_statistics(set_statistics(read_labels(out, "trainval")), spec.classes))


def cli() -> None:
    """The command ``nanodet-make-synthetic``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
