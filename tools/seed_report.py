"""Tables and plots over seeds from a report folder, made from whatever has finished.

    python tools/seed_report.py runs/report --out docs/results/seeds [--seeds 1234 1235 1236]

``runs/report`` holds ``seedN/SCENARIO/METHOD/results.json`` (tools/synthetic_report.sh with SEEDS)
or, for one seed, ``SCENARIO/METHOD/results.json`` or committed ``SCENARIO_METHOD.json`` files
(``python tools/seed_report.py docs/results/report --out DIR``). Writes report.md (per scenario: mean ± std of
final mAP, VOC mAP@0.5, old and new classes, mean forgetting and run seconds, parameters, buffer
bytes, the seeds still missing, and which methods differ beyond the seeds' spread), one CSV and
one plot (mean, min-to-max band) per scenario. Re-run it as runs finish.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from nanodet.continual.seeds import write_seed_report
from nanodet.util.cli import run_main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="report folder (seedN/ folders, or SCENARIO/METHOD/ run folders)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", help="the seeds expected (default: those found)")
    args = parser.parse_args(argv)
    try:
        summary = write_seed_report(args.root, args.out, args.seeds)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print((Path(args.out) / "report.md").read_text())
    return summary


def cli() -> None:
    """The command ``nanodet-seed-report``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
