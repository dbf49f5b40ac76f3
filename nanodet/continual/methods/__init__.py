"""Continual-learning methods by name; each is one small class in its own file."""

from .base import ContinualMethod, TaskContext
from .latent_distillation import LatentDistillation
from .latent_replay import LatentReplay
from .lwf import LwF
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


__all__ = ["METHODS", "ContinualMethod", "LatentDistillation", "LatentReplay", "LwF", "Replay", "SID", "StudentOutputs",
           "TaskContext", "Teacher", "build_method"]
