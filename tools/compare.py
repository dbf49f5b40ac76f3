"""Compare continual-learning runs: one table (markdown and CSV) and the paper's two plots.

    python tools/compare.py runs/demo/15p1/* runs/demo/joint/naive --out runs/demo/compare_15p1
    nanodet-compare RUN_DIR ... --out DIR   # the same, from any directory, after pip install -e .

Writes comparison.md, comparison.csv, map_per_task.png (mAP after each task per method) and
map_vs_memory.png (final mAP against parameters in memory during training).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from nanodet.continual.report import compare_runs
from nanodet.util.cli import run_main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each holds a results.json)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="show runs that have not finished their tasks, marked (default: leave them out)")
    args = parser.parse_args(argv)
    try:
        table = compare_runs(args.runs, args.out, include_unfinished=args.include_unfinished)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    for skipped in table["skipped"]:
        print(f"left out, unfinished: {skipped}")
    print((Path(args.out) / "comparison.md").read_text())
    return table


def cli() -> None:
    """The command ``nanodet-compare``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
