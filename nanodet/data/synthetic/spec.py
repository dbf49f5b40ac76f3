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

PROFILES = ("dense", "voc")
MIN_SIZE, MAX_SIZE = 12, 200  # default object sizes in pixels, drawn or a crop (SyntheticSpec.object_size)


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
    # How many objects an image holds (uniform, both ends included) and the range of their longer
    # sides in pixels (log-uniform); a small image wants smaller objects and fewer of them.
    objects_per_image: tuple[int, int] = (1, 8)
    object_size: tuple[int, int] = (MIN_SIZE, MAX_SIZE)
    # Lines, arcs and speckles that belong to no class; false keeps the background, blur and noise
    # but makes the shapes far quicker to learn (the CPU demo).
    clutter: bool = True
    # Which objects an image holds: "dense" (``objects_per_image`` objects of independent, uniform
    # classes) or "voc" (scenes shaped like VOC2007 trainval: its per-class frequencies, objects
    # and distinct classes per image, co-occurring groups; drawn objects only). scenes.py.
    profile: str = "dense"

    def __post_init__(self):
        if self.objects not in OBJECT_CLASSES:
            raise ValueError(f"SyntheticSpec objects must be one of {sorted(OBJECT_CLASSES)}, got {self.objects!r}")
        for name, low_limit in (("objects_per_image", 1), ("object_size", 4)):
            value = getattr(self, name)
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                    or not low_limit <= value[0] <= value[1]):
                raise ValueError(f"SyntheticSpec {name} must be two integers [low, high] with "
                                 f"{low_limit} <= low <= high, got {value!r}")
            object.__setattr__(self, name, tuple(value))  # YAML and JSON give lists
        if self.profile not in PROFILES:
            raise ValueError(f"SyntheticSpec profile must be one of {list(PROFILES)}, got {self.profile!r}")
        if self.profile == "voc" and self.objects != "drawn":
            raise ValueError("SyntheticSpec profile 'voc' needs objects: drawn (its 20 classes stand for VOC's)")
        if self.profile == "voc" and tuple(self.objects_per_image) != _FIELD_DEFAULTS["objects_per_image"]:
            raise ValueError("SyntheticSpec objects_per_image applies to the dense profile; the voc profile "
                             "draws VOC's number of objects")
        if not isinstance(self.clutter, bool):
            raise ValueError(f"SyntheticSpec clutter must be true or false, got {self.clutter!r}")

    @property
    def classes(self) -> list:
        """The class names of the set, in label order."""
        return OBJECT_CLASSES[self.objects]

    def to_json(self) -> dict:
        # Fields added after version 1 are left out at their defaults, so drawn-mode markers
        # (synthetic.json) stay byte-identical to those written before the fields existed.
        data = asdict(self)
        for name in ("objects", "fashion_mnist_path", "objects_per_image", "object_size", "clutter", "profile"):
            if data[name] == _FIELD_DEFAULTS[name]:
                del data[name]
            elif isinstance(data[name], tuple):
                data[name] = list(data[name])
        return data


_FIELD_DEFAULTS = {f.name: f.default for f in fields(SyntheticSpec)}
