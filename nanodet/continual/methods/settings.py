"""A method's settings, declared once: their defaults, checks, flags, help, and how they are shown.

Each method names a frozen dataclass of its settings (``ContinualMethod.Settings``); every field
is made by ``setting`` and carries what the rest of the toolkit derives from it:

* the command line: ``--name-with-dashes`` with its type, choices and help (``add_flags``);
* the checks: a bad value is a ``ValueError`` naming the flag, raised when the method is built;
* ``describe()`` (the run's settings in run.json and results.json): which settings are shown;
* the default run directory's name: the settings that differ from their defaults.

Adding a setting to a method is one ``setting(...)`` line in its dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterable, Optional

BUFFER_POLICIES = ("random", "balanced", "ocdm")
ALWAYS = "always"
WHEN_SET = "when set"  # shown when not None and not False


def setting(default: Any, kind: type, help: str, *, choices: Optional[tuple] = None, metavar: str | None = None,
            check: Optional[Callable[[Any], Optional[str]]] = None, shown: str = ALWAYS, in_run_name: bool = True,
            flag: bool = True) -> Any:
    """One setting of a method.

    Args:
        default: its value when not given.
        kind: float, int, str or bool (a bool is a switch: its flag turns it on).
        help: what it does, for ``--help`` (the default is appended).
        choices: the values it accepts.
        check: ``value -> None or what is wrong with it`` (the message follows the flag's name).
        shown: in ``describe()``: ``ALWAYS``, ``WHEN_SET``, or the name of another setting, shown
            together with that one.
        in_run_name: whether a changed value names the default run directory.
        flag: whether the command line offers it.
    """
    metadata = dict(kind=kind, help=help, choices=choices, metavar=metavar, check=check, shown=shown,
                    in_run_name=in_run_name, flag=flag)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings every method has: they turn on the optional parts (pseudo-labels, no
    background term, a replay buffer)."""

    pseudo_labels: Optional[float] = setting(
        None, float, "add the teacher's old-class detections scoring above SCORE to new-task images",
        metavar="SCORE", check=lambda v: None if v is None or 0.0 < v < 1.0 else "is a score threshold in (0, 1)",
        shown=WHEN_SET)
    pseudo_label_iou: float = setting(
        0.5, float, "a pseudo-label overlapping a ground-truth box by this IoU or more is dropped",
        shown="pseudo_labels", in_run_name=False, flag=False)
    drop_background: bool = setting(
        False, bool, "at tasks >= 1, drop the background term of the classification loss", shown=WHEN_SET)
    erd: bool = setting(
        False, bool, "at tasks >= 1, add elastic response distillation (ERD) against the previous task's model",
        shown=WHEN_SET)
    buffer_size: Optional[int] = setting(
        None, int, "keep this many earlier-task images in a replay buffer; half of every batch comes from it",
        metavar="IMAGES", check=lambda v: None if v is None or v >= 1 else "must be positive", shown=WHEN_SET)
    buffer_policy: str = setting("random", str, "which images the buffer keeps: random (the paper's), "
                                 "class-balanced, or ocdm (the boxes' class distribution closest to uniform)",
                                 choices=BUFFER_POLICIES, shown="buffer_size")
    label_propagation: Optional[float] = setting(
        None, float, "after each task, label the buffer's earlier images with the new model's detections of "
        "that task's classes scoring at least SCORE, never over a box they have (needs --buffer-size)",
        metavar="SCORE", check=lambda v: None if v is None or 0.0 < v < 1.0 else "is a score threshold in (0, 1)",
        shown=WHEN_SET)

    box_replay: Optional[int] = setting(
        None, int, "keep a bank of this many old-class object crops and paste them into new-task images "
        "(box replay, as in ABR)", metavar="BOXES",
        check=lambda v: None if v is None or v >= 1 else "must be positive", shown=WHEN_SET)
    box_replay_side: int = setting(48, int, "side in pixels of each stored crop (3 * side^2 bytes a crop)",
                                   metavar="PIXELS", check=lambda v: None if v >= 4 else "must be at least 4",
                                   shown="box_replay")
    box_replay_per_image: int = setting(2, int, "crops pasted into each training image", metavar="CROPS",
                                        check=lambda v: None if v >= 1 else "must be positive", shown="box_replay")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ValueError(f"{flag_name(field.name)} must be one of {meta['choices']}, got {value!r}")
            problem = meta["check"](value) if meta["check"] else None
            if problem:
                raise ValueError(f"{flag_name(field.name)} {problem}, got {value!r}")
        if self.label_propagation is not None and self.buffer_size is None:
            raise ValueError(f"{flag_name('label_propagation')} labels a replay buffer: give --buffer-size too")

    def shown(self) -> dict:
        """The settings ``describe()`` reports, in declaration order."""
        values = dataclasses.asdict(self)

        def is_set(name: str) -> bool:
            return values[name] is not None and values[name] is not False

        out = {}
        for field in dataclasses.fields(self):
            rule = field.metadata["shown"]
            if rule == ALWAYS or (rule == WHEN_SET and is_set(field.name)) or (rule in values and is_set(rule)):
                out[field.name] = values[field.name]
        return out

    def changed(self) -> list[str]:
        """``name`` + value of each setting that names a run and differs from its default
        (a switch turned on: its name alone)."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["in_run_name"] and value != field.default:
                parts.append(field.name if value is True else f"{field.name}{value}")
        return parts


def freeze_backbone_from_setting() -> dataclasses.Field:
    """The task from which a shared frozen backbone applies (Latent Distillation, Latent Replay)."""
    return setting(None, int, "task from which the backbone is frozen (default: 0 with pretrained backbone weights, "
                              "else 1)", check=lambda v: None if v is None or v >= 0 else "must be >= 0")


def add_flags(parser: argparse.ArgumentParser, settings_classes: Iterable[type]) -> dict:
    """Add the flags of every setting of these classes (each once); returns their defaults by name."""
    defaults = {}
    for cls in settings_classes:
        for field in dataclasses.fields(cls):
            meta = field.metadata
            if field.name in defaults or not meta["flag"]:
                continue
            defaults[field.name] = field.default
            help_text = meta["help"]
            if meta["kind"] is bool:
                parser.add_argument(flag_name(field.name), dest=field.name, action="store_true", help=help_text)
                continue
            if field.default is not None and "(default" not in help_text:
                help_text += f" (default {field.default:g})" if meta["kind"] is float else f" (default {field.default})"
            parser.add_argument(flag_name(field.name), dest=field.name, type=meta["kind"], default=field.default,
                                choices=meta["choices"], metavar=meta["metavar"], help=help_text)
    return defaults


def values_for(settings_cls: type, args: argparse.Namespace, offered: dict, method: str) -> dict:
    """The parsed values of ``settings_cls``'s settings; a flag the command offers for another
    method than the chosen one, given a value other than its default, is an error."""
    own = {field.name for field in dataclasses.fields(settings_cls)}
    for name, default in offered.items():
        if name not in own and getattr(args, name) != default:
            raise ValueError(f"{flag_name(name)} does not apply to {method}")
    return {name: getattr(args, name) for name in offered if name in own}
