"""Upstream NanoDet's home of its config class, so ``from nanodet.util.yacs import CfgNode`` works.

Upstream's configs are yacs CfgNodes. This package's node (``nanodet.util.config.CfgNode``) answers
the same everyday calls (attribute access, ``merge_from_file``, ``merge_from_list``,
``freeze``/``defrost``, ``clone``) with its keys checked as on load, so this is an alias, not a
second class: ``nanodet.util.cfg`` and ``isinstance`` checks see one type. The yacs package itself
is not needed.
"""

from .config import CfgNode

__all__ = ["CfgNode"]
