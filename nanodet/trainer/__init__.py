from .builders import build_dataloader, build_trainer, resolve_devices
from .task import TrainingTask

__all__ = ["TrainingTask", "build_dataloader", "build_trainer", "resolve_devices"]
