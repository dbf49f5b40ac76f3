"""Time a whole continual run as a user meets it: from the command to results.json.

    python tools/benchmark_run.py cfg/synthetic.yml --method ld --task 15p1 \\
        --epochs 100 --reference-epochs 1 --json docs/results/run_15p1_ld.json
    nanodet-benchmark-run cfg/synthetic.yml ...   # the same, after pip install -e . (an editable install)

Runs the entry point (``latentDistillation.py``, ``naive.py``...) as a separate process, exactly
as a user types it, and reads the per-task breakdown that the run writes into results.json:
start-up (task data, teacher, image cache, Lightning's set-up, up to the first step), warm-up
(the first steps: cuDNN's algorithm search, the CUDA graph's capture, compilation), training and
evaluation. The process's own wall time, from launch to exit, is the headline.

``--reference-epochs N`` then runs upstream's way in the same invocation: the CPU augmentation
pipeline in DataLoader workers, per-image label assignment, fp32, no CUDA graph, for N epochs per
task, and extrapolates it to the fast run's epochs per image (its training seconds scaled by the
ratio of training images seen; start-up and evaluation taken as measured). The extrapolation is
said so in the output. Both paths use the config's batch size unless ``--set`` says otherwise.
``--device`` is handed to the entry point, which reads it (``cuda:0,1``: DDP on both).

The entry points are the repository's (beside tools/): the command needs the checkout, as an
editable install gives it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from nanodet.util.cli import add_config_arg, add_config_override_arg, add_device_arg, parse_args, run_main
from nanodet.util.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]  # the repository, whose entry points are run

ENTRY_POINTS = {"naive": "naive.py", "replay": "replay.py", "latent_replay": "replay.py", "lwf": "lwf.py",
                "sid": "SID.py", "ld": "latentDistillation.py"}
FAST = ["device.gpu_augment=true", "device.precision=bf16", "device.channels_last=true", "device.cuda_graph=true"]
REFERENCE = ["device.gpu_augment=false", "device.precision=32", "device.channels_last=false",
             "device.cuda_graph=false", "device.compile=false", "model.arch.head.batched_assign=false"]


def command(args: argparse.Namespace, run_dir: Path, epochs: int | None, settings: Sequence[str]) -> list[str]:
    cmd = [sys.executable, str(ROOT / ENTRY_POINTS[args.method]), args.config, "--task", args.task,
           "--out", str(run_dir), "--restart", "--seed", str(args.seed)]
    if args.method == "latent_replay":
        cmd.append("--latent")
    if args.device:
        cmd += ["--device", args.device]
    overrides = [*settings, *args.overrides]
    if epochs:
        overrides += [f"schedule.total_epochs={epochs}", f"schedule.lr_schedule.T_max={epochs}"]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def timed_run(args: argparse.Namespace, name: str, epochs: int | None, settings: Sequence[str],
              log_dir: Path) -> dict[str, Any]:
    """One run of the entry point; its wall time and the per-task breakdown of its results.json."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"benchmark_run_{name}_"))
    cmd = command(args, run_dir, epochs, settings)
    log = log_dir / f"{name}.log"
    print(f"{name}: {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    timed_out = False
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            code = process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:  # keep the tasks it finished: results.json is written after each
            process.kill()
            code, timed_out = process.wait(), True
    wall = time.perf_counter() - started
    results_path = run_dir / "results.json"
    if (code != 0 and not timed_out) or not results_path.is_file():
        raise SystemExit(f"{name} run failed (exit code {code}); its log: {log}")
    results = json.loads(results_path.read_text())
    tasks = [{key: entry.get(key) for key in ("task", "train_images", "epochs", "startup_seconds",
                                              "startup_data_seconds", "warmup_seconds", "train_seconds",
                                              "eval_seconds", "train_img_per_s", "mAP", "voc_mAP50")}
             for entry in results["per_task"]]
    return {"command": " ".join(cmd[1:]), "wall_seconds": round(wall, 1),
            "finished": not timed_out and results["finished"],
            "epochs_per_task": results["epochs_per_task"],
            "final_mAP": results["final"]["mAP"], "tasks": tasks,
            "totals": {key: round(sum(t[key] or 0 for t in tasks), 1)
                       for key in ("startup_seconds", "warmup_seconds", "train_seconds", "eval_seconds")}}


def extrapolate(reference: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """The reference's whole run at the fast run's epochs: training seconds scaled per image."""
    seconds = 0.0
    for ref_task, fast_task in zip(reference["tasks"], fast["tasks"]):
        scale = fast_task["epochs"] / max(ref_task["epochs"], 1)
        measured_once = (ref_task["startup_seconds"] or 0) + (ref_task["eval_seconds"] or 0)
        seconds += measured_once + ref_task["train_seconds"] * scale
    # What the process pays besides its tasks (imports, parsing the data, reports) as measured.
    outside = reference["wall_seconds"] - sum(reference["totals"][k] for k in ("startup_seconds", "train_seconds",
                                                                             "eval_seconds"))
    return {"wall_seconds": round(seconds + outside, 1),
            "how": f"extrapolated from {reference['epochs_per_task']} epoch(s) per task to "
                   f"{fast['epochs_per_task']}: training seconds scaled by epochs, start-up and evaluation as measured"}


def table(result: dict[str, Any]) -> str:
    lines = ["| task | images | epochs | start-up s | warm-up s | train s | eval s | img/s | mAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        lines.append(f"| {t['task']} | {t['train_images']} | {t['epochs']} | {t['startup_seconds']} | "
                     f"{t['warmup_seconds']} | {t['train_seconds']} | {t['eval_seconds']} | {t['train_img_per_s']} | "
                     f"{t['mAP']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="ld", choices=sorted(ENTRY_POINTS))
    parser.add_argument("--task", default="15p1")
    add_config_arg(parser, default="cfg/synthetic.yml", example="cfg/synthetic.yml")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per task of the fast run (default: the config's)")
    parser.add_argument("--reference-epochs", type=int, default=0,
                        help="also run upstream's way for this many epochs per task (0: not)")
    parser.add_argument("--seed", type=int, default=1234)
    add_device_arg(parser, default="the config's device.gpu_ids")
    add_config_override_arg(parser)  # for both paths
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop a run after this long and record the tasks it finished (marked unfinished)")
    parser.add_argument("--logs", default=None, help="folder for the runs' logs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the results here (rewritten after each path)")
    args = parse_args(parser, argv)
    entry = ROOT / ENTRY_POINTS[args.method]
    if not entry.is_file():
        raise SystemExit(f"error: {entry}: no such entry point (this command needs the repository: pip install -e .)")
    log_dir = Path(args.logs or tempfile.mkdtemp(prefix="benchmark_run_logs_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "method": args.method, "task": args.task,
              "cfg": args.config, "overrides": args.overrides}
    record["fast"] = timed_run(args, "fast", args.epochs, FAST, log_dir)
    write(args.json, record)
    print(table(record["fast"]))
    fast = record["fast"]
    print(f"fast: {fast['wall_seconds']:.1f} s from the command to results.json"
          + ("" if fast["finished"] else f" (stopped by --timeout after {len(fast['tasks'])} tasks)"), flush=True)
    if args.reference_epochs and not fast["finished"]:
        print("reference: not run, the fast run did not finish (its extrapolation needs every task)")
    elif args.reference_epochs:
        record["reference"] = timed_run(args, "reference", args.reference_epochs, REFERENCE, log_dir)
        record["reference_extrapolated"] = extrapolate(record["reference"], record["fast"])
        ratio = record["reference_extrapolated"]["wall_seconds"] / record["fast"]["wall_seconds"]
        record["ratio"] = round(ratio, 1)
        write(args.json, record)
        print(table(record["reference"]))
        print(f"reference: {record['reference_extrapolated']['wall_seconds']:.0f} s "
              f"({record['reference_extrapolated']['how']}); {ratio:.1f}x the fast run")


def machine() -> dict[str, str]:
    info = {"host": platform.node(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    return info


def write(path: str | Path | None, record: dict[str, Any]) -> None:
    if path:
        atomic_write_json(Path(path), record)


def cli() -> None:
    """The command ``nanodet-benchmark-run``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
