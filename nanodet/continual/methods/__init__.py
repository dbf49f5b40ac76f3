"""Continual-learning methods by name: presets of parts (``parts.py``), each in its own file."""

from .base import ContinualMethod, TaskContext
from .buffer import ImageReplay
from .distillation import FeatureDistillation, LogitDistillation
from .frozen_backbone import FrozenBackbone
from .latent_distillation import LatentDistillation
from .latent_replay import LatentBuffer, LatentReplay
from .lwf import LwF
from .parts import DropBackground, Part
from .pseudo_labels import PseudoLabels
from .replay import Replay
from .sid import SID
from .teacher import StudentOutputs, Teacher

METHODS = {
    "naive": ContinualMethod,
    "replay": Replay,
    "lwf": LwF,
    "sid": SID,
    "ld": LatentDistillation,
    "latent_replay": LatentReplay,
}


def build_method(name: str, **settings) -> ContinualMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name](**settings)


__all__ = ["METHODS", "ContinualMethod", "DropBackground", "FeatureDistillation", "FrozenBackbone", "ImageReplay",
           "LatentBuffer", "LatentDistillation", "LatentReplay", "LogitDistillation", "LwF", "Part", "PseudoLabels",
           "Replay", "SID", "StudentOutputs", "TaskContext", "Teacher", "build_method"]
