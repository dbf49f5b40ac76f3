"""Inference time per image on this machine's CPU: ONNX models (float, int8) with onnxruntime,
LiteRT models (.tflite, tools/convert_tflite.py) with their interpreter, and the float PyTorch
model, on one thread and on every core.

    python tools/latency.py cfg/synthetic.yml --onnx workspace/nanodet.onnx workspace/nanodet_int8.onnx \
        [--model workspace/model.pth] [--threads 1 0] [--runs 50] [--json latency.json]

Batch 1, the network alone (decoding and NMS are the host's either way), after 10 warm-up runs;
the median of --runs timed runs and its 10th and 90th percentiles. ``--threads 0``: every core.
The PyTorch model runs at the config's val input size, with --model's weights if given (weights
do not change its time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from nanodet.deploy.latency import machine, onnx_latency, tflite_latency, torch_latency
from nanodet.model.arch import build_model
from nanodet.util.cli import (add_config_arg, add_config_override_arg, config_from_args, parse_args, run_main,
                              with_weights)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--onnx", nargs="*", default=[],
                        help="models to time: .onnx (tools/export_onnx.py, quantize.py) or .tflite (convert_tflite.py)")
    parser.add_argument("--model", default=None, help="weights of the PyTorch model (.pth or .ckpt); optional")
    parser.add_argument("--no-torch", action="store_true", help="do not time the PyTorch model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts (0: every core)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement (default 50)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    for path in args.onnx:
        if not Path(path).is_file():
            raise SystemExit(f"error: {path}: no such model file")
    rows = []
    for threads in args.threads:
        for path in args.onnx:
            try:
                timer = tflite_latency if str(path).endswith(".tflite") else onnx_latency
                rows.append({"model": str(path), **timer(path, threads, args.runs)})
            except ValueError as err:
                raise SystemExit(f"error: {err}") from None
        if not args.no_torch:
            model = with_weights(build_model(cfg.model), args.model)
            size = tuple(cfg.data.val.input_size)
            rows.append({"model": f"PyTorch float32 {size[0]}x{size[1]}", **torch_latency(model, size, threads,
                                                                                          args.runs)})
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, onnxruntime {info['onnxruntime']}, torch {info['torch']}")
    print(f"{'model':60s} {'threads':>7s} {'median ms':>10s} {'p10':>7s} {'p90':>7s}")
    for row in rows:
        threads = "all" if row["threads"] == 0 else str(row["threads"])
        print(f"{row['model'][-60:]:60s} {threads:>7s} {row['median_ms']:10.2f} {row['p10_ms']:7.2f} "
              f"{row['p90_ms']:7.2f}")
    result = {"machine": info, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def cli() -> None:
    """The command ``nanodet-latency``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
