"""Runs repeated over seeds: mean and spread per (scenario, method), what is missing, and which
differences between methods exceed the seeds' spread.

A report root holds one folder per seed (``seed1234/``, ``seed1235/``...; tools/synthetic_report.sh
with ``SEEDS``), each with ``SCENARIO/METHOD/results.json``; a root without seed folders is one
seed, and so is a folder of committed ``SCENARIO_METHOD.json`` files (docs/results/report/). The
tables are made from whatever has finished, so a report can be regenerated as runs come in; a
cell lists the seeds it still lacks.

Two methods are called different only when their seeds' ranges do not overlap: every seed of
one is above every seed of the other. For three seeds against three, that is a one-sided
exact permutation test at p = 1/20 = 0.05 (the one ordering, of the 20 equally likely splits of
six values, that puts one method's three on top); with fewer seeds no difference is claimed.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..util.io import atomic_write_text
from .metrics import mean_std_text
from .paper import against_the_paper
from .report import _save_figure, plot_mean_with_range, run_label
from .results import read_results

SEED_FOLDER = re.compile(r"^seed(\d+)$")
# A committed results folder (docs/results/report/): SCENARIO_METHOD.json files side by side.
FLAT_RESULTS = re.compile(r"^(\d+p\d+|joint)_(.+)\.json$")
MIN_SEEDS_FOR_A_DIFFERENCE = 3


@dataclass
class Cell:
    """One (scenario, method) over seeds: its finished runs' results by seed."""

    scenario: str
    method: str  # the method's folder name under the scenario
    runs: dict[int, dict] = field(default_factory=dict)
    unfinished: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return run_label(next(iter(self.runs.values()))) if self.runs else self.method

    def values(self, metric: Callable[[dict], float | None]) -> list[float]:
        out = [metric(r) for _, r in sorted(self.runs.items())]
        return [v for v in out if v is not None and not math.isnan(v)]


def collect(root: str | Path) -> dict[tuple[str, str], Cell]:
    """Every ``results.json`` under ``root`` (seed folders or one flat seed), by (scenario, method)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such report folder")
    seed_dirs = [(int(m.group(1)), d) for d in sorted(root.iterdir()) if (m := SEED_FOLDER.match(d.name))]
    cells: dict[tuple[str, str], Cell] = {}
    for seed_from_folder, folder in seed_dirs or [(None, root)]:
        found = [(p, p.parts[-3], p.parts[-2]) for p in sorted(folder.glob("*/*/results.json"))]
        if not found and not seed_dirs:
            found = [(p, m.group(1), m.group(2)) for p in sorted(folder.glob("*.json"))
                     if (m := FLAT_RESULTS.match(p.name))]
        for path, scenario, method in found:
            results = read_results(path)
            seed = seed_from_folder if seed_from_folder is not None else int(results["seed"])
            cell = cells.setdefault((scenario, method), Cell(scenario, method))
            if results.get("finished"):
                cell.runs[seed] = results
            else:
                cell.unfinished.append(seed)
    return cells


def differs(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 when every value of ``a`` exceeds every value of ``b``, -1 for the reverse, 0 otherwise
    (also with fewer than ``MIN_SEEDS_FOR_A_DIFFERENCE`` values on either side)."""
    if min(len(a), len(b)) < MIN_SEEDS_FOR_A_DIFFERENCE:
        return 0
    if min(a) > max(b):
        return 1
    if min(b) > max(a):
        return -1
    return 0


def _old(results: dict) -> float | None:
    return results["final"]["old_mAP"] if results["per_task"][-1]["old_classes"] else None


def _run_seconds(results: dict) -> float:
    """Start-up, training and inference of every task: the run's own time, without the process's
    imports and data generation (scoring runs beside the next task, so it is not added)."""
    keys = ("startup_seconds", "train_seconds", "eval_seconds")
    return sum(float(task.get(k) or 0.0) for task in results["per_task"] for k in keys)


# (column, metric, digits): the seed table's columns after the method, each a mean ± std.
METRICS: list[tuple[str, Callable[[dict], float | None], int]] = [
    ("final mAP", lambda r: r["final"]["mAP"], 3),
    ("VOC mAP@0.5", lambda r: r["final"]["voc_mAP50"], 3),
    ("old mAP", _old, 3),
    ("new mAP", lambda r: r["final"]["new_mAP"], 3),
    ("mean forgetting", lambda r: r["final"]["mean_forgetting"], 3),
    ("run s", _run_seconds, 0),
]


def scenario_table(cells: Sequence[Cell], seeds: Sequence[int]) -> tuple[list[str], list[list[str]]]:
    """The markdown rows of one scenario: seeds done, each metric's mean ± std, parameters,
    buffer, and what is missing."""
    header = ["method", "seeds", *(name for name, _, _ in METRICS), "trainable params", "params in memory",
              "buffer MB", "missing"]
    rows = []
    for cell in cells:
        row = [cell.label, str(len(cell.runs))]
        row += [mean_std_text(cell.values(metric), digits) for _, metric, digits in METRICS]
        any_run = next(iter(cell.runs.values()), None)
        if any_run is not None:
            row += [f"{any_run['parameters']['trainable']:,}", f"{any_run['parameters']['in_memory']:,}",
                    f"{any_run.get('buffer_bytes', 0) / 1e6:.1f}"]
        else:
            row += ["-", "-", "-"]
        missing = [s for s in seeds if s not in cell.runs]
        notes = [f"seed {s}" + (" (unfinished)" if s in cell.unfinished else "") for s in missing]
        row.append(", ".join(notes) or "")
        rows.append(row)
    return header, rows


def difference_matrix(cells: Sequence[Cell], metric: Callable[[dict], float | None]) -> list[list[str]]:
    """``>`` where the row's method beats the column's beyond the seeds' spread, ``<`` where it
    loses, ``~`` otherwise (``differs``)."""
    values = [cell.values(metric) for cell in cells]
    return [["" if i == j else {1: ">", -1: "<", 0: "~"}[differs(a, b)] for j, b in enumerate(values)]
            for i, a in enumerate(values)]


def plot_mean_per_task(cells: Sequence[Cell], path: Path, title: str) -> None:
    """mAP@[.5:.95] of the seen classes after each task: the mean over seeds, the band their
    minimum to maximum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    top, tasks = 0.0, 0
    for cell in cells:
        per_seed = [[e["mAP"] for e in r["per_task"]] for r in cell.runs.values()]
        if not per_seed:
            continue
        _, columns = plot_mean_with_range(ax, per_seed, cell.label)
        top, tasks = max(top, max(max(c) for c in columns)), max(tasks, len(columns))
    ax.set_ylim(0, top * 1.1 if top > 0 else 1)  # from zero: a drop looks as large as it is
    ax.set_xticks(range(tasks))
    ax.set_xticklabels([f"T{t}" for t in range(tasks)])
    ax.set_xlabel("after task")
    ax.set_ylabel("mAP@[.5:.95], seen classes (mean; band: min to max)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save_figure(fig, path)
    plt.close(fig)


def write_seed_report(root: str | Path, out_dir: str | Path, seeds: Sequence[int] | None = None) -> dict:
    """``report.md`` (per scenario: the seed table, the difference matrix of final mAP; then the
    paper's 15p1 and 19p1 results beside ours in relative terms), one CSV and one plot per
    scenario, from whatever has finished under ``root``. ``seeds``: the seeds
    expected (default: every seed found)."""
    cells = collect(root)
    if not cells:
        raise ValueError(f"{root}: no results.json under it (SCENARIO/METHOD/results.json, or seedN/ folders)")
    found = sorted({s for c in cells.values() for s in [*c.runs, *c.unfinished]})
    seeds = sorted(seeds) if seeds else found
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Runs over seeds ({', '.join(map(str, seeds))})", "",
             "Each cell: mean ± sample standard deviation over the finished seeds. `>` / `<`: the row's "
             "method above / below the column's in final mAP beyond the seeds' spread (every seed of one above "
             "every seed of the other, at least 3 seeds each: a one-sided exact permutation test at p = 0.05 "
             "for 3 against 3); `~`: not distinguishable.", ""]
    summary = {}
    for scenario in sorted({s for s, _ in cells}):
        group = [cells[k] for k in sorted(cells) if k[0] == scenario]
        header, rows = scenario_table(group, seeds)
        lines += [f"## {scenario}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        compared = [c for c in group if len(c.runs) and c.label != "base"]
        if len(compared) > 1:
            matrix = difference_matrix(compared, METRICS[0][1])
            lines += ["", "| final mAP | " + " | ".join(str(k) for k in range(len(compared))) + " |",
                      "|---|" + "---|" * len(compared)]
            lines += [f"| {k} {cell.label} | " + " | ".join(row) + " |"
                      for k, (cell, row) in enumerate(zip(compared, matrix))]
        lines.append("")
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        atomic_write_text(out_dir / f"seeds_{scenario}.csv", buffer.getvalue())
        if any(len(c.runs) for c in group):
            plot_mean_per_task([c for c in group if c.label != "base"] or group,
                               out_dir / f"map_per_task_{scenario}.png", f"{scenario}: mean over seeds")
        summary[scenario] = rows
    lines += against_the_paper(cells, out_dir)
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return summary
