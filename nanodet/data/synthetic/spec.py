"""What a generated set is: its class names (drawn or Fashion-MNIST), the object size range both
kinds share, and ``SyntheticSpec``, the arguments that fully determine the files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

SYNTHETIC_CLASSES = [
    "disc", "ring", "square", "frame", "triangle", "diamond", "cross", "star", "hexagon",
    "octagon", "pentagon", "crescent", "arrow", "bar", "lshape", "tshape", "checker", "target",
    "bowtie", "drop",
]
# Fashion-MNIST's labels 0-9, named without slashes or spaces so they work as VOC/COCO names.
FASHION_MNIST_CLASSES = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankleboot",
]
OBJECT_CLASSES = {"drawn": SYNTHETIC_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}

MIN_SIZE, MAX_SIZE = 12, 200  # object sizes in pixels, drawn or a crop; no longer side exceeds MAX_SIZE


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
