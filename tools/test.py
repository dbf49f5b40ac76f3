"""Evaluate a trained detector on a config's val data.

    python tools/test.py cfg/VOC.yml --model workspace/VOC/model_best.ckpt [--device cuda] [--save-dir DIR]
    nanodet-test cfg/VOC.yml ...      # the same, from any directory, after pip install -e .

The model file may be a Lightning checkpoint (ours or upstream's) or a plain state dict.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from nanodet.data.dataset import build_dataset
from nanodet.evaluator import build_evaluator
from nanodet.model.arch import build_model
from nanodet.trainer.builders import inference_device
from nanodet.trainer.evaluate import evaluate_model
from nanodet.util import CheckpointError, atomic_write_json, get_logger, load_model_weight
from nanodet.util.cli import (add_config_arg, add_config_override_arg, add_device_arg, config_from_args, parse_args,
                              run_main)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--model", required=True, help="checkpoint (.ckpt) or weights (.pth)")
    add_device_arg(parser, default="cuda if available", one_device=True)
    parser.add_argument("--save-dir", default=None, help="where to write detections and metrics")
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)

    model = build_model(cfg.model)
    try:
        load_model_weight(model, args.model, strict=True)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    dataset = build_dataset(cfg.data.val, "val", class_names=cfg.class_names)
    evaluator = build_evaluator(cfg.evaluator, dataset)
    results = evaluate_model(model, dataset, evaluator, cfg, device=inference_device(args.device),
                             save_dir=args.save_dir)
    scalars = {k: round(float(v), 4) for k, v in results.items() if isinstance(v, (int, float))}
    get_logger().info("%s on %d images: %s", args.model, len(dataset), scalars)
    if args.save_dir:
        atomic_write_json(Path(args.save_dir) / "eval_results.json", results)
    return results


def cli() -> None:
    """The command ``nanodet-test``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
