"""Results of a run (results.json, results.md, a plot) and comparisons across runs.

Every number says which metric it is: ``mAP`` is COCO-style mAP@[.5:.95] through pycocotools
(the Latent Distillation paper's headline metric); ``voc_mAP50`` is the VOC protocol mAP@0.5
(all-point interpolation, difficult boxes ignored), the one the continual-detection literature
quotes. Both are over the classes seen so far, on the test images holding one of them.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..util.io import atomic_write, atomic_write_json, atomic_write_text
from .results import METRIC_NOTES, read_results

def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _cell(column: str, value) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and column in ("train s", "buffer MB"):
        return _fmt(value, 1)
    return _fmt(value)


def results_markdown(results: dict) -> str:
    method = results["method"]
    lines = [
        f"# {results['scenario']} / {method['method']} on {results['config_name']}",
        "",
        f"Method settings: `{json.dumps(method)}`; seed {results['seed']}; {results['epochs_per_task']} "
        f"epochs per task; hand-over: {results['handover']}; config `{results['config']}`.",
        "",
        "| task | new classes | train images | train s | mAP | AP50 | VOC mAP@0.5 | old mAP | new mAP "
        "| mean forgetting |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in results["per_task"]:
        new = ", ".join(e["new_classes"]) if len(e["new_classes"]) <= 3 else f"{len(e['new_classes'])} classes"
        lines.append(
            f"| {e['task']} | {new} | {e['train_images']} | {e['train_seconds']:.0f} | {_fmt(e['mAP'])} | "
            f"{_fmt(e['AP50'])} | {_fmt(e['voc_mAP50'])} | {_fmt(e['old_mAP'] if e['old_classes'] else None)} | "
            f"{_fmt(e['new_mAP'])} | {_fmt(e['mean_forgetting'])} |"
        )
    n = len(results["task_matrix"])
    if n > 1:
        lines += ["", "Task matrix R[t][k] (mAP@[.5:.95] of task k's classes after task t):", "",
                  "| after task | " + " | ".join(f"T{k}" for k in range(n)) + " |",
                  "|---|" + "---|" * n]
        for t, row in enumerate(results["task_matrix"]):
            lines.append(f"| {t} | " + " | ".join(_fmt(v) for v in row[:n]) + " |")
    params = results["parameters"]
    lines += ["", f"Parameters: {params['trainable']:,} trainable, {params['in_memory']:,} in memory during "
                  f"training; buffer {results['buffer_bytes'] / 1e6:.1f} MB; total training "
                  f"{results['total_train_seconds']:.0f} s.", "",
              "Metrics: " + "; ".join(f"{k}: {v}" for k, v in METRIC_NOTES.items()) + "."]
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path):
    def write(tmp: Path):
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")

    atomic_write(path, write)


def plot_mean_with_range(ax, per_seed: Sequence[Sequence[float]], label: str):
    """One line per task index: the mean over seeds, and the band from their minimum to their
    maximum, over the tasks every seed reached. Returns the line and the columns (per task, the
    seeds' values)."""
    length = min(len(values) for values in per_seed)
    columns = [[values[t] for values in per_seed] for t in range(length)]
    line, = ax.plot(range(length), [statistics.fmean(c) for c in columns], marker="o",
                    label=f"{label} (n={len(per_seed)})")
    ax.fill_between(range(length), [min(c) for c in columns], [max(c) for c in columns],
                    color=line.get_color(), alpha=0.15, linewidth=0)
    return line, columns


def plot_title(runs: Sequence[dict]) -> str:
    """The scenario most of the runs share, and the config: a one-task run (a base model, joint
    training) beside a scenario's runs does not name the figure."""
    if not runs:
        return ""
    sequences = [run for run in runs if len(run["per_task"]) > 1] or list(runs)
    scenario = collections.Counter(run["scenario"] for run in sequences).most_common(1)[0][0]
    return f"{scenario} on {runs[0]['config_name']}"


def line_style(index: int) -> dict[str, str]:
    """Colour and dash of a figure's index-th line: past matplotlib's ten colours a line gets a
    new dash, so that up to forty lines of a figure all look different."""
    return {"color": f"C{index % 10}", "linestyle": ("-", "--", ":", "-.")[index // 10 % 4]}


def plot_map_per_task(runs: Sequence[dict], path: Path, title: str | None = None,
                      labels: Sequence[str] | None = None) -> None:
    """mAP@[.5:.95] of the seen classes after each task, one line per run (the paper's 15p1 figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = labels or [run_label(run) for run in runs]
    top = 0.0
    for index, (run, label) in enumerate(zip(runs, labels)):
        values = [e["mAP"] if e["mAP"] is not None else math.nan for e in run["per_task"]]
        ax.plot(range(len(values)), values, marker="o", label=label, **line_style(index))
        top = max([top, *(v for v in values if not math.isnan(v))])
    # From zero, so that a drop looks as large as it is relative to the score, not to the spread.
    ax.set_ylim(0, top * 1.1 if top > 0 else 1)
    if runs:
        ax.set_xticks(range(max(len(r["per_task"]) for r in runs)))
        ax.set_xticklabels([f"T{t}" for t in range(max(len(r["per_task"]) for r in runs))])
    ax.set_xlabel("after task")
    ax.set_ylabel("mAP@[.5:.95], seen classes")
    ax.set_title(title or plot_title(runs))
    ax.grid(alpha=0.3)
    # Beside the axes: inside, a dozen methods' legend hides the lines it names.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    _save_figure(fig, path)
    plt.close(fig)


def plot_map_vs_memory(runs: Sequence[dict], path: Path, labels: Sequence[str] | None = None) -> None:
    """Final mAP against parameters held in memory during training (the paper's 19p1 figure).
    Labels sit in a column right of the points, in the points' vertical order and at least a
    line apart, each joined to its point, so that close points keep readable labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    labels = labels or [run_label(run) for run in runs]
    points = []
    for run, label in zip(runs, labels):
        params = run["parameters"]["in_memory"] / 1e6
        final = run["final"]["mAP"]
        ax.scatter([params], [final if final is not None else math.nan], s=40)
        if run.get("buffer_bytes"):
            label += f" (+{run['buffer_bytes'] / 1e6:.0f} MB buffer)"
        points.append((params, final if final is not None else 0.0, label))
    if points:
        low = min(y for _, y, _ in points)
        high = max(y for _, y, _ in points)
        # Evenly spread over the points' range, and at least a tenth of it apart (a line of text).
        step = max((high - low) / max(len(points) - 1, 1), (high - low) * 0.1, 1e-3)
        right = max(x for x, _, _ in points)
        span = max(right - min(x for x, _, _ in points), 0.1)
        for rank, (x, y, label) in enumerate(sorted(points, key=lambda p: p[1])):
            ax.annotate(label, (x, y), xytext=(right + 0.15 * span, low + rank * step), fontsize=8,
                        va="center", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
        ax.set_xlim(right=right + 0.9 * span)
        ax.set_ylim(low - step, max(high, low + (len(points) - 1) * step) + step)
    ax.set_xlabel("parameters in memory during training (M)")
    ax.set_ylabel("final mAP@[.5:.95], all seen classes")
    ax.set_title(plot_title(runs))
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def run_label(results: dict) -> str:
    """The method plus the settings that tell runs apart (the optional parts: pseudo-labels, no
    background term, ERD, a replay buffer added to a method that has none, a buffer policy other
    than random, label propagation, box replay; a non-default config). A base model (task 0 alone) is "base"."""
    method = results["method"]
    if results.get("scenario") == "joint":
        label = "joint"
    elif len(results.get("tasks") or []) == 1:  # task 0 alone: the base the methods start from
        label = "base"
    else:
        label = method.get("label") or method["method"]
        if method.get("pseudo_labels") is not None:
            label += f"+pseudo-labels {method['pseudo_labels']}"
        if method.get("drop_background"):
            label += "+drop-background"
        if method.get("erd"):
            label += "+ERD"
        if method.get("buffer_size") is not None and "replay" not in method["method"]:
            label += f"+replay buffer {method['buffer_size']}"
        if method.get("buffer_size") is not None and method.get("buffer_policy", "random") != "random":
            label += f" ({method['buffer_policy']})"
        if method.get("label_propagation") is not None:
            label += f"+label propagation {method['label_propagation']}"
        if method.get("box_replay") is not None:
            label += f"+box replay {method['box_replay']}"
    backbone = (((results.get("cfg") or {}).get("model") or {}).get("arch") or {}).get("backbone") or {}
    if backbone.get("name") not in (None, "ShuffleNetV2"):
        label += f" ({backbone['name']})"
    return label


def describe_run(results: dict) -> str:
    """A run in a line: its label, seed and schedule (a single run's legend)."""
    batch = (((results.get("cfg") or {}).get("device") or {}).get("batchsize_per_gpu"))
    epochs = results["epochs_per_task"]
    schedule = f"{epochs} epoch{'' if epochs == 1 else 's'} per task" + (f", batch {batch}" if batch else "")
    return f"{run_label(results)}: seed {results['seed']}, {schedule}"


def write_reports(run_dir: Path, results: dict) -> None:
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    plot_map_per_task([results], run_dir / "map_per_task.png", labels=[describe_run(results)])


# ---------------------------------------------------------------------- comparisons
def distinct_labels(runs: Sequence[dict]) -> list[str]:
    """Each run's ``run_label``, plus, among runs whose labels are equal, the settings in which they
    differ (``ld (alpha 2.0)`` beside ``ld (alpha 1.0)``), then their seeds; an unfinished run is
    marked with the tasks it finished."""
    labels = [run_label(r) for r in runs]
    out = list(labels)
    for label in set(labels):
        group = [i for i, other in enumerate(labels) if other == label]
        if len(group) < 2:
            continue
        settings = [runs[i]["method"] for i in group]
        differing = [key for key in dict.fromkeys(k for s in settings for k in s)
                     if len({repr(s.get(key)) for s in settings}) > 1]
        if not differing and len({runs[i].get("seed") for i in group}) > 1:
            differing = ["seed"]
        for i, method in zip(group, settings):
            values = {**method, "seed": runs[i].get("seed")}
            if differing:
                out[i] += " (" + ", ".join(f"{k.replace('_', ' ')} {values.get(k)}" for k in differing) + ")"
    for i, run in enumerate(runs):
        if not run.get("finished"):
            out[i] += f" [unfinished: {len(run['per_task'])} of {len(run.get('tasks') or [])} tasks]"
    return out


COMPARE_COLUMNS = [
    ("run", None),  # distinct_labels: needs every run
    ("scenario", lambda r: r["scenario"]),
    ("final mAP", lambda r: r["final"]["mAP"]),
    ("final VOC mAP@0.5", lambda r: r["final"]["voc_mAP50"]),
    ("old mAP", lambda r: r["final"]["old_mAP"] if r["per_task"][-1]["old_classes"] else None),
    ("new mAP", lambda r: r["final"]["new_mAP"]),
    ("mean forgetting", lambda r: r["final"]["mean_forgetting"]),
    ("train s", lambda r: r["total_train_seconds"]),
    ("trainable params", lambda r: r["parameters"]["trainable"]),
    ("params in memory", lambda r: r["parameters"]["in_memory"]),
    ("buffer MB", lambda r: round(r.get("buffer_bytes", 0) / 1e6, 2)),
]


def load_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no results.json (is it a run directory of a finished task?)")
    return read_results(path)


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 include_unfinished: bool = False) -> dict[str, Any]:
    """One table (markdown and CSV) and the paper's two plots for several runs. A run that has not
    finished its tasks is left out (listed under ``skipped``), or, with ``include_unfinished``,
    shown and marked: its last task is not the scenario's."""
    loaded = [(Path(d), load_run(d)) for d in run_dirs]
    runs = [r for _, r in loaded if include_unfinished or r.get("finished")]
    skipped = [f"{d} ({len(r['per_task'])} of {len(r.get('tasks') or [])} tasks)"
               for d, r in loaded if not (include_unfinished or r.get("finished"))]
    if not runs:
        raise ValueError("no finished run among " + ", ".join(str(d) for d, _ in loaded)
                         + " (--include-unfinished shows unfinished ones)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = [name for name, _ in COMPARE_COLUMNS]
    labels = distinct_labels(runs)
    rows = [[label, *(get(r) for _, get in COMPARE_COLUMNS[1:])] for label, r in zip(labels, runs)]

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    atomic_write_text(out_dir / "comparison.csv", buffer.getvalue())

    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        md.append("| " + " | ".join(_cell(name, v) for name, v in zip(header, row)) + " |")
    notes = ("mAP: COCO mAP@[.5:.95]; VOC mAP@0.5: all-point, difficult ignored; both over all seen "
             "classes after the last task. Parameters in memory: student plus teacher during training.")
    if skipped:
        notes += "\n\nLeft out, unfinished: " + "; ".join(skipped) + "."
    atomic_write_text(out_dir / "comparison.md", "\n".join(md) + "\n\n" + notes + "\n")
    plot_map_per_task(runs, out_dir / "map_per_task.png", labels=labels)
    plot_map_vs_memory(runs, out_dir / "map_vs_memory.png", labels=labels)
    return {"header": header, "rows": rows, "skipped": skipped}
