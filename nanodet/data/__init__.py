from .batch_process import stack_batch_img
from .collate import collate_and_pad, collate_function, naive_collate
from .dataset import DATASETS, BaseDataset, ImageRecord, build_dataset
from .transform import PIPELINE_KEYS, Pipeline
from ..util.config import register_components

# The config checker (nanodet/util/config.py) checks datasets and pipelines against these.
register_components({"data.train": DATASETS, "data.val": DATASETS},
                    nested_keys={"data.train.pipeline": PIPELINE_KEYS, "data.val.pipeline": PIPELINE_KEYS})

__all__ = ["DATASETS", "BaseDataset", "ImageRecord", "Pipeline", "build_dataset",
           "collate_and_pad", "collate_function", "naive_collate", "stack_batch_img"]
