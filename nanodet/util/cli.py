"""Command-line pieces shared by every tool and entry point."""

from __future__ import annotations

import argparse
import errno
import sys

from .check_point import CheckpointError
from .config import CfgNode, ConfigError, read_config

# What a user's input can cause (a bad config, value, checkpoint or file): one line, not a traceback.
USER_ERRORS = (ConfigError, CheckpointError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError)


# How torch.save reports a write cut short (a full disk, a quota) from its C++ writer.
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed writing", "unexpected pos")


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return isinstance(err, RuntimeError) and any(text in str(err) for text in TORCH_WRITE_FAILURES)


def is_user_error(err: BaseException, errors=()) -> bool:
    """Whether ``err`` is the user's to fix (bad input, a full disk): one line, not a traceback."""
    return isinstance(err, (*USER_ERRORS, *errors)) or is_disk_full(err)


def describe_error(err: BaseException) -> str:
    if is_disk_full(err):
        if isinstance(err, OSError):
            where = f" writing {err.filename}" if err.filename else ""
            return f"no space left on the device{where}; free some and re-run (finished work is kept)"
        return (f"writing a file failed, most likely for want of disk space ({str(err).splitlines()[0][:120]}); "
                "free some and re-run (finished work is kept)")
    if isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        return f"{err.filename}: {err.strerror or err}"
    return str(err)


def run_main(main, argv=None, errors=()):
    """Run a command's ``main(argv)``: a user's mistake (``USER_ERRORS``, ``errors``, a full disk)
    ends in one ``error: ...`` line and a non-zero exit; ``--debug`` anywhere keeps the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        return main([a for a in argv if a != "--debug"])
    except (*USER_ERRORS, *errors, OSError, RuntimeError) as err:
        if debug or not is_user_error(err, errors):
            raise
        raise SystemExit(f"error: {describe_error(err)}") from None


def add_config_arg(parser: argparse.ArgumentParser, default: str | None = None, example: str = "cfg/VOC.yml"):
    """The config file as the first positional argument, or as ``--cfg`` (the original scripts'
    flag); read back by ``parse_args``."""
    parser.add_argument("config", nargs="?", default=None, help=f"config file, e.g. {example}"
                        + (f" (default {default})" if default else ""))
    parser.add_argument("--cfg", dest="config_flag", default=None, metavar="CONFIG", help="the config file, as a flag")
    parser.set_defaults(config_default=default)


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args`` with the config of ``add_config_arg`` in ``args.config``."""
    args = parser.parse_args(argv)
    if hasattr(args, "config_flag"):
        if args.config and args.config_flag and args.config != args.config_flag:
            parser.error(f"two config files: {args.config} and --cfg {args.config_flag}")
        args.config = args.config or args.config_flag or args.config_default
        if args.config is None:
            parser.error("a config file is needed: give it first (e.g. cfg/VOC.yml) or with --cfg")
        del args.config_flag, args.config_default
    return args


def add_config_override_arg(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set schedule.total_epochs=5 "
             "--set device.gpu_ids=-1 (dotted keys, YAML values; repeatable)",
    )


def config_from_args(path, args) -> CfgNode:
    """The config at ``path`` with the ``--set`` overrides of ``args`` applied and checked."""
    return read_config(path, getattr(args, "overrides", []))
