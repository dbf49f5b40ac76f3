from .color import ColorTransform
from .pipeline import PIPELINE_KEYS, Pipeline
from .warp import ShapeTransform, get_minimum_dst_shape, get_resize_matrix, warp_and_resize

__all__ = ["PIPELINE_KEYS", "ColorTransform", "Pipeline", "ShapeTransform",
           "get_minimum_dst_shape", "get_resize_matrix", "warp_and_resize"]
