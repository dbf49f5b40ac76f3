"""The Latent Distillation paper's VOC2007 results beside ours, in relative terms.

The paper's numbers (NanoDet-Plus-m, 320x320, VOC2007 test, mAP@[.5:.95] of the seen classes;
the project's docs/anchors.md) come from other data than the synthetic benchmark, so absolute
mAP does not compare. What does: how much of its base a method keeps after each 15p1 task
(mAP after task t over mAP after task 0), and in 19p1 each method's final mAP as a share of
Latent Distillation's (the paper gives no joint or 19-class base for it to be a share of), with
the rank of each method in both.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .metrics import mean_std_text
from .report import _save_figure, plot_mean_with_range

# mAP@[.5:.95] of the seen classes after tasks 0 to 5 (15 base classes, then five one-class tasks).
PAPER_15P1 = {
    "naive": (0.319, 0.073, 0.018, 0.007, 0.005, 0.006),
    "replay": (0.319, 0.203, 0.176, 0.101, 0.077, 0.050),
    "latent_replay": (0.319, 0.206, 0.175, 0.125, 0.097, 0.061),
    "lwf": (0.319, 0.206, 0.121, 0.028, 0.007, 0.003),
    "sid": (0.319, 0.204, 0.144, 0.156, 0.104, 0.101),
    "ld": (0.319, 0.228, 0.173, 0.148, 0.110, 0.096),
}
# mAP@[.5:.95] of all 20 classes after 19p1's one task.
PAPER_19P1 = {"naive": 0.032, "replay": 0.163, "latent_replay": 0.172, "lwf": 0.217, "sid": 0.228, "ld": 0.236}
REFERENCE_19P1 = "ld"


def shares_of_base(runs: dict[int, dict]) -> list[list[float]]:
    """Per seed, mAP after each task over mAP after task 0."""
    shares = []
    for results in runs.values():
        maps = [task["mAP"] for task in results["per_task"]]
        if maps[0] > 0:
            shares.append([m / maps[0] for m in maps])
    return shares


def ranks(scores: dict[str, float]) -> dict[str, int]:
    """1 for the highest score."""
    order = sorted(scores, key=scores.get, reverse=True)
    return {name: order.index(name) + 1 for name in scores}


def table_15p1(cells: dict) -> list[str]:
    """Markdown rows: per method, the share of the base kept after T1..T5, ours (mean ± std over
    seeds) then the paper's, and the rank at T5 in both."""
    ours = {m: shares for m in PAPER_15P1
            if ("15p1", m) in cells and (shares := shares_of_base(cells["15p1", m].runs))}
    methods = list(ours)
    tasks = min((len(s) for m in methods for s in ours[m]), default=0)
    if tasks < 2:
        return []
    last = tasks - 1
    our_rank = ranks({m: statistics.fmean(s[last] for s in ours[m]) for m in methods})
    paper_rank = ranks({m: PAPER_15P1[m][last] / PAPER_15P1[m][0] for m in methods})
    header = ["method", "seeds", *(f"T{t}: ours / paper" for t in range(1, tasks)), f"rank at T{last}: ours / paper"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        paper = PAPER_15P1[m]
        cols = [f"{mean_std_text([s[t] for s in ours[m]], 2)} / {paper[t] / paper[0]:.2f}" for t in range(1, tasks)]
        rows.append(f"| {m} | {len(ours[m])} | " + " | ".join(cols) + f" | {our_rank[m]} / {paper_rank[m]} |")
    return rows


def table_19p1(cells: dict) -> list[str]:
    """Markdown rows: per method, its final mAP over LD's (paired by seed), ours then the paper's,
    and the rank in both."""
    reference = cells.get(("19p1", REFERENCE_19P1))
    if reference is None or not reference.runs:
        return []
    methods = [m for m in PAPER_19P1 if ("19p1", m) in cells and cells["19p1", m].runs]
    ratios = {}
    for m in methods:
        runs = cells["19p1", m].runs
        ratios[m] = [runs[s]["final"]["mAP"] / reference.runs[s]["final"]["mAP"]
                     for s in sorted(runs) if s in reference.runs and reference.runs[s]["final"]["mAP"] > 0]
    methods = [m for m in methods if ratios[m]]
    our_rank = ranks({m: statistics.fmean(ratios[m]) for m in methods})
    paper_rank = ranks({m: PAPER_19P1[m] for m in methods})
    rows = ["| method | seeds | final mAP over LD's: ours / paper | rank: ours / paper |", "|---|---|---|---|"]
    for m in methods:
        paper = PAPER_19P1[m] / PAPER_19P1[REFERENCE_19P1]
        rows.append(f"| {m} | {len(ratios[m])} | {mean_std_text(ratios[m], 2)} / {paper:.2f} | "
                    f"{our_rank[m]} / {paper_rank[m]} |")
    return rows


def plot_15p1(cells: dict, path: Path) -> bool:
    """Share of the base kept after each 15p1 task: ours (mean, band min to max) solid, the paper's
    dashed in the same colour. False when there is nothing to draw."""
    methods = [m for m in PAPER_15P1 if ("15p1", m) in cells and shares_of_base(cells["15p1", m].runs)]
    if not methods:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in methods:
        line, _ = plot_mean_with_range(ax, shares_of_base(cells["15p1", m].runs), f"{m}, ours")
        paper = PAPER_15P1[m]
        ax.plot(range(len(paper)), [v / paper[0] for v in paper], linestyle="--", color=line.get_color(),
                label=f"{m}, paper (VOC2007)")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(6))
    ax.set_xticklabels([f"T{t}" for t in range(6)])
    ax.set_xlabel("after task")
    ax.set_ylabel("share of the base's mAP kept (seen classes)")
    ax.set_title("15p1 against the paper")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    _save_figure(fig, path)
    plt.close(fig)
    return True


def against_the_paper(cells: dict, out_dir: Path) -> list[str]:
    """The report's section: both tables and the 15p1 plot (``15p1_against_paper.png``); empty
    when no run of the paper's methods has finished in 15p1 or 19p1."""
    rows_15p1, rows_19p1 = table_15p1(cells), table_19p1(cells)
    if not rows_15p1 and not rows_19p1:
        return []
    lines = ["## Against the paper", "",
             "The paper's VOC2007 numbers (docs/anchors.md) in relative terms, since the data differ."]
    if rows_15p1:
        lines += ["", "15p1: mAP of the seen classes after each task over the base's (after task 0); ours is the "
                  "mean ± std over seeds.", "", *rows_15p1]
        if plot_15p1(cells, out_dir / "15p1_against_paper.png"):
            lines += ["", "![15p1 against the paper](15p1_against_paper.png)"]
    if rows_19p1:
        lines += ["", "19p1: final mAP over Latent Distillation's (seed by seed for ours).", "", *rows_19p1]
    return lines + [""]
