from .batch_process import stack_batch_img
from .collate import collate_and_pad, collate_function, naive_collate
from .dataset import DATASETS, BaseDataset, ImageRecord, build_dataset
from .transform import Pipeline

__all__ = ["DATASETS", "BaseDataset", "ImageRecord", "Pipeline", "build_dataset",
           "collate_and_pad", "collate_function", "naive_collate", "stack_batch_img"]
