"""Detection datasets by config name, and ``build_dataset``."""

import copy
from typing import Iterable, Mapping, Optional, Sequence

from .base import AnnotationError, BaseDataset, ImageError, ImageRecord, check_images, filter_records
from .coco import CocoDataset
from .synthetic import SyntheticDataset
from .xml_dataset import XMLDataset
from .yolo import YoloDataset

DATASETS = {
    "XMLDataset": XMLDataset,
    "VOCDataset": XMLDataset,  # VOC is the XML format; the name reads better in VOC configs
    "CocoDataset": CocoDataset,
    "YoloDataset": YoloDataset,
    "SyntheticDataset": SyntheticDataset,
}


def build_dataset(dataset_cfg: Mapping, mode: str, class_names: Optional[Sequence[str]] = None,
                  keep_classes: Optional[Iterable[int]] = None) -> BaseDataset:
    """Build the dataset a config node (``data.train`` or ``data.val``) describes.

    ``name`` selects the class in ``DATASETS``; the other keys are its constructor arguments.
    ``class_names`` (usually the config's top-level list) fills in the node's own when it has
    none; the two must agree when both are given. ``keep_classes`` restricts the dataset to a
    class subset (see ``BaseDataset.subset``).
    """
    kwargs = copy.deepcopy(dict(dataset_cfg))
    name = kwargs.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; known: {sorted(DATASETS)}")
    if class_names is not None:
        own = kwargs.get("class_names")
        if own is not None and list(own) != list(class_names):
            raise ValueError(f"dataset {name}: its class_names {list(own)} differ from "
                             f"{list(class_names)}")
        kwargs["class_names"] = list(class_names)
    return DATASETS[name](mode=mode, keep_classes=keep_classes, **kwargs)


__all__ = ["DATASETS", "AnnotationError", "BaseDataset", "CocoDataset", "ImageError", "ImageRecord",
           "SyntheticDataset", "XMLDataset", "YoloDataset", "build_dataset", "check_images", "filter_records"]
