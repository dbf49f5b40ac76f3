"""Continual-learning methods by name."""

from .base import ContinualMethod, StudentOutputs, TaskContext

METHODS = {"naive": ContinualMethod}


def build_method(name: str, **settings) -> ContinualMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name](**settings)


__all__ = ["METHODS", "ContinualMethod", "StudentOutputs", "TaskContext", "build_method"]
