"""Command-line pieces shared by every tool and entry point."""

from __future__ import annotations

import argparse

from .config import CfgNode, read_config


def add_config_override_arg(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set schedule.total_epochs=5 "
             "--set device.gpu_ids=-1 (dotted keys, YAML values; repeatable)",
    )


def config_from_args(path, args) -> CfgNode:
    """The config at ``path`` with the ``--set`` overrides of ``args`` applied and checked."""
    return read_config(path, getattr(args, "overrides", []))
