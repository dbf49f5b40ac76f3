"""Results of a run (results.json, results.md, a plot) and comparisons across runs.

Every number says which metric it is: ``mAP`` is COCO-style mAP@[.5:.95] through pycocotools
(the Latent Distillation paper's headline metric); ``voc_mAP50`` is the VOC protocol mAP@0.5
(all-point interpolation, difficult boxes ignored), the one the continual-detection literature
quotes. Both are over the classes seen so far, on the test images holding one of them.
"""

from __future__ import annotations

import csv
import io
import json
import math
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


def plot_map_per_task(runs: Sequence[dict], path: Path, title: str | None = None) -> None:
    """mAP@[.5:.95] of the seen classes after each task, one line per run (the paper's 15p1 figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in runs:
        values = [e["mAP"] if e["mAP"] is not None else math.nan for e in run["per_task"]]
        ax.plot(range(len(values)), values, marker="o", label=run_label(run))
    if runs:
        ax.set_xticks(range(max(len(r["per_task"]) for r in runs)))
        ax.set_xticklabels([f"T{t}" for t in range(max(len(r["per_task"]) for r in runs))])
    ax.set_xlabel("after task")
    ax.set_ylabel("mAP@[.5:.95], seen classes")
    ax.set_title(title or (f"{runs[0]['scenario']} on {runs[0]['config_name']}" if runs else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)


def plot_map_vs_memory(runs: Sequence[dict], path: Path) -> None:
    """Final mAP against parameters held in memory during training (the paper's 19p1 figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in runs:
        params = run["parameters"]["in_memory"] / 1e6
        final = run["final"]["mAP"]
        ax.scatter([params], [final if final is not None else math.nan], s=40)
        note = run_label(run)
        if run.get("buffer_bytes"):
            note += f" (+{run['buffer_bytes'] / 1e6:.0f} MB buffer)"
        ax.annotate(note, (params, final or 0), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("parameters in memory during training (M)")
    ax.set_ylabel("final mAP@[.5:.95], all seen classes")
    ax.set_title(f"{runs[0]['scenario']} on {runs[0]['config_name']}" if runs else "")
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def run_label(results: dict) -> str:
    """The method plus the settings that tell runs apart (pseudo-labels, a replay buffer added to
    a method that has none, a non-default config)."""
    if results.get("scenario") == "joint":
        label = "joint"
    else:
        method = results["method"]
        label = method.get("label") or method["method"]
        if method.get("pseudo_labels") is not None:
            label += f"+pseudo-labels {method['pseudo_labels']}"
        if method.get("drop_background"):
            label += "+drop-background"
        if method.get("buffer_size") is not None and "replay" not in method["method"]:
            label += f"+replay buffer {method['buffer_size']}"
    backbone = (((results.get("cfg") or {}).get("model") or {}).get("arch") or {}).get("backbone") or {}
    if backbone.get("name") not in (None, "ShuffleNetV2"):
        label += f" ({backbone['name']})"
    return label


def write_reports(run_dir: Path, results: dict) -> None:
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    plot_map_per_task([results], run_dir / "map_per_task.png")


# ---------------------------------------------------------------------- comparisons
COMPARE_COLUMNS = [
    ("run", lambda r: run_label(r)),
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


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One table (markdown and CSV) and the paper's two plots for several runs."""
    runs = [load_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = [name for name, _ in COMPARE_COLUMNS]
    rows = [[get(r) for _, get in COMPARE_COLUMNS] for r in runs]

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
    atomic_write_text(out_dir / "comparison.md", "\n".join(md) + "\n\n" + notes + "\n")
    plot_map_per_task(runs, out_dir / "map_per_task.png")
    plot_map_vs_memory(runs, out_dir / "map_vs_memory.png")
    return {"header": header, "rows": rows}
