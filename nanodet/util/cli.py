"""Command-line pieces shared by every tool and entry point."""

from __future__ import annotations

import argparse
import errno
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

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


def is_user_error(err: BaseException, errors: Iterable[type[BaseException]] = ()) -> bool:
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


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None,
             errors: Iterable[type[BaseException]] = ()) -> Any:
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


def add_config_arg(parser: argparse.ArgumentParser, default: str | None = None, example: str = "cfg/VOC.yml") -> None:
    """The config file as the first positional argument, or as ``--cfg`` (the original scripts'
    flag); read back by ``parse_args``."""
    parser.add_argument("config", nargs="?", default=None, help=f"config file, e.g. {example}"
                        + (f" (default {default})" if default else ""))
    parser.add_argument("--cfg", dest="config_flag", default=None, metavar="CONFIG", help="the config file, as a flag")
    parser.set_defaults(config_default=default)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` with the config of ``add_config_arg`` in ``args.config`` and the
    ``--device`` of ``add_device_arg`` checked (``parse_device``: a ValueError naming it)."""
    args = parser.parse_args(argv)
    if getattr(args, "device_arg", False):
        parse_device(args.device)
        del args.device_arg
    if hasattr(args, "config_flag"):
        if args.config and args.config_flag and args.config != args.config_flag:
            parser.error(f"two config files: {args.config} and --cfg {args.config_flag}")
        args.config = args.config or args.config_flag or args.config_default
        if args.config is None:
            parser.error("a config file is needed: give it first (e.g. cfg/VOC.yml) or with --cfg")
        del args.config_flag, args.config_default
    return args


def add_config_override_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set schedule.total_epochs=5 "
             "--set device.gpu_ids=-1 (dotted keys, YAML values; repeatable)",
    )


def config_from_args(path: str | Path, args: argparse.Namespace) -> CfgNode:
    """The config at ``path`` with the ``--set`` overrides of ``args`` applied and checked."""
    return read_config(path, getattr(args, "overrides", []))


# ``--device``: one syntax for every command (the continual entry points, tools/train.py and the
# tools that run a model on one device), parsed here and nowhere else; what is available (a GPU,
# how many) is the trainer's to resolve (``nanodet.trainer.builders.resolve_devices``).
DEVICE_FORMS = "cpu, cpu:N, cuda, cuda:0 or cuda:0,1"


@dataclass(frozen=True)
class DeviceRequest:
    """A ``--device`` value, read: ``kind`` "cpu" or "cuda"; ``gpu_ids`` the CUDA indices asked for
    (None: every visible GPU); ``processes`` the CPU processes of ``cpu:N`` (DDP with gloo)."""

    kind: str
    gpu_ids: tuple[int, ...] | None = None
    processes: int = 1


def parse_device(text: str | None) -> DeviceRequest | None:
    """``--device`` read: ``cpu``, ``cpu:N`` (N processes), ``cuda`` (every GPU; ``gpu`` too),
    ``cuda:0`` or ``cuda:0,1``. None for None; anything else is a ValueError naming the flag and
    the value, which a command reports in one line (``run_main``)."""
    if text is None:
        return None
    device = text.strip().lower()
    if device == "cpu":
        return DeviceRequest("cpu")
    if device.startswith("cpu:"):
        count = device.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--device {device!r}: expected cpu:N with N >= 1 processes")
        return DeviceRequest("cpu", processes=int(count))
    if device in ("cuda", "gpu"):
        return DeviceRequest("cuda")
    if device.startswith(("cuda:", "gpu:")):
        ids = device.split(":", 1)[1].split(",")
        if not all(i.strip().isdigit() for i in ids):
            raise ValueError(f"--device {device!r}: expected {DEVICE_FORMS}")
        return DeviceRequest("cuda", tuple(int(i) for i in ids))
    raise ValueError(f"--device {device!r}: expected {DEVICE_FORMS}")


def add_device_arg(parser: argparse.ArgumentParser, default: str = "the config's device.gpu_ids",
                   one_device: bool = False) -> None:
    """``--device`` with the syntax of ``parse_device``, checked by ``parse_args``. A command
    that runs on ``one_device`` takes the first of a list (``cuda:0,1``: cuda:0)."""
    forms = "cpu, cuda or cuda:N (of a list such as cuda:0,1, the first)" if one_device else DEVICE_FORMS
    parser.add_argument("--device", default=None, help=f"{forms} (default: {default})")
    parser.set_defaults(device_arg=True)



def with_weights(model, weights: str | Path | None):
    """``model`` with ``weights`` (a .ckpt or .pth) loaded strictly when given; a file that does
    not fit is a one-line error naming it."""
    from .check_point import load_model_weight

    if weights:
        try:
            load_model_weight(model, weights, strict=True)
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
    return model
