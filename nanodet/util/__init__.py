from .box_transform import bbox2distance, distance2bbox, warp_boxes
from .check_point import CheckpointError, load_model_weight, read_checkpoint, save_model_state
from .config import CfgNode, ConfigError, cfg, config_name, load_config, read_config
from .flops_counter import get_model_complexity_info
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .logger import add_log_file, get_logger, remove_log_file

__all__ = [
    "CfgNode", "CheckpointError", "ConfigError", "add_log_file", "atomic_torch_save",
    "atomic_write_json", "atomic_write_text", "bbox2distance", "cfg", "config_name",
    "distance2bbox", "get_logger", "get_model_complexity_info", "load_config", "load_model_weight",
    "read_checkpoint", "read_config", "remove_log_file", "save_model_state", "warp_boxes",
]
