"""Scenarios: how a config's ordered class list is split into a sequence of tasks.

A scenario is data, a list of class groups (global label = index in the config's class list);
the named forms are shorthands for such lists (methods.md section 2):

    15p5, 10p10, 19p1, 15p1   VOC's usual splits (15 base classes, then 5 one-class tasks, ...)
    XpY                       X base classes, then tasks of Y classes until the list is used up
    joint                     one task with every class: the upper bound, in the same format
    FILE.yml                  a YAML list of class-name lists, e.g. [[cat, dog], [car], [bus]]
    [[cat, dog], [car]]       the same list inline
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

_XPY = re.compile(r"^(\d+)p(\d+)$")


class ScenarioError(ValueError):
    """A scenario that does not fit the config's classes; raised before anything trains."""


@dataclass(frozen=True)
class Scenario:
    name: str
    class_names: tuple[str, ...]
    tasks: tuple[tuple[int, ...], ...]  # global class indices of each task, in order

    def __len__(self) -> int:
        return len(self.tasks)

    def new_classes(self, task: int) -> list[int]:
        return list(self.tasks[task])

    def old_classes(self, task: int) -> list[int]:
        """Classes seen before ``task``."""
        return sorted(c for group in self.tasks[:task] for c in group)

    def seen_classes(self, task: int) -> list[int]:
        """Classes of tasks 0..task: what is evaluated after ``task``."""
        return sorted(c for group in self.tasks[: task + 1] for c in group)

    def future_classes(self, task: int) -> list[int]:
        """Classes of the head not seen up to and including ``task``."""
        seen = set(self.seen_classes(task))
        return [c for c in range(len(self.class_names)) if c not in seen]

    def names(self, classes: Sequence[int]) -> list[str]:
        return [self.class_names[c] for c in classes]

    @property
    def is_joint(self) -> bool:
        return self.name == "joint"

    def describe(self) -> str:
        groups = ["+".join(self.names(group)) if len(group) <= 3 else f"{len(group)} classes"
                  for group in self.tasks]
        return f"{self.name}: " + " | ".join(groups)


def parse_scenario(spec: str | Path | Sequence[Sequence[str | int]], class_names: Sequence[str]) -> Scenario:
    """Turn ``--task`` (a name, ``XpY``, a YAML file or an inline YAML list) into a Scenario."""
    class_names = tuple(class_names)
    n = len(class_names)
    if not n:
        raise ScenarioError("the config has no class_names")
    if isinstance(spec, (list, tuple)):
        return _from_groups("custom", spec, class_names)
    text = str(spec).strip()
    if text == "joint":
        return Scenario("joint", class_names, (tuple(range(n)),))
    match = _XPY.match(text)
    if match:
        base, step = int(match.group(1)), int(match.group(2))
        if not 0 < base < n:
            raise ScenarioError(f"scenario {text}: {base} base classes does not fit the config's {n} classes "
                                f"(it needs between 1 and {n - 1})")
        if step < 1 or (n - base) % step:
            divisors = [d for d in range(1, n - base + 1) if (n - base) % d == 0]
            raise ScenarioError(f"scenario {text}: the {n - base} classes after the base do not split into "
                                f"tasks of {step}; with {base} base classes use one of "
                                + ", ".join(f"{base}p{d}" for d in divisors)
                                + ", or list the groups in a YAML file")
        tasks = [tuple(range(base))] + [tuple(range(s, s + step)) for s in range(base, n, step)]
        return Scenario(text, class_names, tuple(tasks))
    if text.endswith((".yml", ".yaml")):
        path = Path(text)
        if not path.is_file():
            raise ScenarioError(f"scenario file not found: {path}")
        try:
            groups = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ScenarioError(f"{path}: not valid YAML: {err}") from None
        if isinstance(groups, dict):
            groups = groups.get("tasks")
        return _from_groups(path.stem, groups, class_names, source=str(path))
    if text.startswith("["):
        try:
            groups = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ScenarioError(f"scenario {text!r}: not a valid YAML list: {err}") from None
        return _from_groups("custom", groups, class_names)
    raise ScenarioError(f"unknown scenario {text!r}: use joint, XpY (e.g. 15p1, 10p10, 40p10), "
                        f"a YAML file of class-name lists, or an inline list like [[cat, dog], [car]]")


def _from_groups(name, groups, class_names, source=None) -> Scenario:
    where = source or "scenario"
    if not isinstance(groups, (list, tuple)) or not groups or not all(isinstance(g, (list, tuple)) for g in groups):
        raise ScenarioError(f"{where}: expected a non-empty list of class-name lists, got {groups!r}")
    index = {name: i for i, name in enumerate(class_names)}
    tasks, seen = [], set()
    for t, group in enumerate(groups):
        if not group:
            raise ScenarioError(f"{where}: task {t} is empty (pycocotools would read it as 'all classes')")
        labels = []
        for entry in group:
            entry = str(entry)
            if entry not in index:
                raise ScenarioError(f"{where}: task {t}: unknown class {entry!r}; the config's classes are "
                                    f"{list(class_names)}")
            if entry in seen:
                raise ScenarioError(f"{where}: class {entry!r} appears in more than one task")
            seen.add(entry)
            labels.append(index[entry])
        tasks.append(tuple(labels))
    return Scenario(name, tuple(class_names), tuple(tasks))
