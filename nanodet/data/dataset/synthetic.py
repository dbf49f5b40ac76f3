"""The embedded synthetic benchmark as a dataset: generated on first use, then read as VOC XML."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..synthetic import SyntheticSpec, ensure_generated
from .xml_dataset import XMLDataset

SPLITS = ("trainval", "test")


class SyntheticDataset(XMLDataset):
    """The generated benchmark (``nanodet.data.synthetic``) at ``root``: 20 drawn classes, or
    the 10 Fashion-MNIST classes with ``objects: fashion_mnist``.

    Args:
        root: folder of the generated set; created with ``synthetic``'s arguments if missing.
        split: "trainval" or "test".
        synthetic: the generator's arguments (train, test, seed, width, height, jpeg_quality,
            objects, fashion_mnist_path); give the train and val nodes the same ones (a YAML
            anchor does it).
        Other arguments: see ``BaseDataset``. ``class_names`` must be the set's classes (the
            drawn or the Fashion-MNIST ones), in order, or a prefix of them (a 10-class set from
            the same images, say).
    """

    def __init__(
        self,
        root: str,
        input_size: Sequence[int],
        pipeline: Mapping,
        split: str = "trainval",
        synthetic: Optional[Mapping] = None,
        keep_ratio: bool = True,
        mode: str = "train",
        multi_scale: Optional[Sequence[float]] = None,
        class_names: Optional[Sequence[str]] = None,
        keep_classes: Optional[Iterable[int]] = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"SyntheticDataset split must be one of {SPLITS}, got {split!r}")
        spec_args = dict(synthetic or {})
        known = {f.name for f in fields(SyntheticSpec)}
        unknown = sorted(set(spec_args) - known)
        if unknown:
            raise ValueError(f"SyntheticDataset synthetic: unknown keys {unknown}; valid: {sorted(known)}")
        spec = SyntheticSpec(**spec_args)
        classes = spec.classes
        class_names = list(class_names) if class_names is not None else list(classes)
        if class_names != classes[:len(class_names)]:
            raise ValueError(
                f"SyntheticDataset: class_names must be the generator's {spec.objects} classes in "
                f"order {classes} (or a prefix), got {class_names}"
            )
        root = ensure_generated(root, spec)
        super().__init__(
            img_path=str(Path(root) / "JPEGImages"),
            ann_path=str(Path(root) / "ImageSets" / "Main" / f"{split}.txt"),
            input_size=input_size, pipeline=pipeline, keep_ratio=keep_ratio, mode=mode,
            multi_scale=multi_scale, class_names=class_names, keep_classes=keep_classes,
            # A prefix of the classes leaves the others' boxes out, as unlabeled objects.
            ignore_unknown_classes=len(class_names) < len(classes),
        )
