"""Compare continual-learning runs: one table (markdown and CSV) and the paper's two plots.

    python tools/compare.py runs/demo/15p1/* runs/demo/joint/naive --out runs/demo/compare_15p1

Writes comparison.md, comparison.csv, map_per_task.png (mAP after each task per method) and
map_vs_memory.png (final mAP against parameters in memory during training).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanodet.util.cli import run_main  # noqa: E402
from nanodet.continual.report import compare_runs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each holds a results.json)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        table = compare_runs(args.runs, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print((Path(args.out) / "comparison.md").read_text())
    return table


if __name__ == "__main__":
    run_main(main)
