"""Upstream NanoDet's optimizer builder (``nanodet.optim.build_optimizer``), for user code."""

from .builder import build_optimizer, optimizer_class

__all__ = ["build_optimizer", "optimizer_class"]
