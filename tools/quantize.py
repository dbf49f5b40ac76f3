"""Quantize an exported detector to int8 with onnxruntime, then evaluate both models on the val set.

    python tools/quantize.py cfg/synthetic.yml --model workspace/synthetic/nanodet.onnx \
        --out workspace/synthetic/nanodet_int8.onnx --calib 200 [--head-fp32] [--val-images K] [--no-eval] \
        [--classes disc,ring,...] [--json metrics.json]
    nanodet-quantize cfg/synthetic.yml ... # the same, from any directory, after pip install -e .

Static quantization (QDQ, int8 weights per channel, uint8 activations), calibrated on --calib
training images spread over the training set, through the val pipeline (no augmentation). The
output tail (reshapes, concatenation and sigmoid after the head's last convs) stays in fp32.
The model must be a raw-output export (tools/export_onnx.py without --decode). Prints the file
sizes, the bytes of stored weights by data type, and the evaluator's metrics of the fp32 and the
int8 model, both run with onnxruntime and post-processed by the PyTorch head.

It has no ``--device``: calibration and both evaluations run onnxruntime's CPU provider (the
int8 model is meant for CPUs at the edge) and the head's post-processing on the CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from nanodet.deploy.onnx_eval import build_dataset_at_size, evaluate_onnx, onnx_input_size, onnx_session
from nanodet.deploy.quantize import calibration_reader, initializer_bytes, quantize_onnx
from nanodet.evaluator import build_evaluator
from nanodet.model.head import build_head
from nanodet.util.cli import add_config_arg, add_config_override_arg, config_from_args, parse_args, run_main
from nanodet.util.io import atomic_write_json


def describe_size(path: str | Path) -> str:
    by_type = initializer_bytes(path)
    weights = ", ".join(f"{name} {count:,} B" for name, count in sorted(by_type.items(), key=lambda kv: -kv[1]))
    return f"{path}: file {Path(path).stat().st_size:,} B; stored tensors {weights}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--model", required=True, help="fp32 ONNX model (tools/export_onnx.py, raw output)")
    parser.add_argument("--out", required=True, help="int8 ONNX file to write")
    parser.add_argument("--calib", type=int, default=200, help="calibration images from the training set (default 200)")
    parser.add_argument("--head-fp32", action="store_true",
                        help="also keep the head's last 1x1 convs (gfl_cls) in fp32")
    parser.add_argument("--no-eval", action="store_true", help="only quantize and print the sizes")
    parser.add_argument("--val-images", type=int, default=None, help="evaluate on the first K val images only")
    parser.add_argument("--classes", default=None,
                        help="score only these classes, comma-separated names (a base model: the classes it learned)")
    parser.add_argument("--json", default=None, help="also write the sizes and both models' metrics here")
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    if args.calib < 1:
        raise SystemExit("error: --calib must be at least 1")
    class_ids = None
    if args.classes is not None:
        names = list(dict.fromkeys(name.strip() for name in args.classes.split(",") if name.strip()))
        unknown = [name for name in names if name not in cfg.class_names]
        if unknown or not names:
            raise SystemExit(f"error: --classes {args.classes!r}: not classes of {args.config}: "
                             f"{unknown or 'none given'}")
        class_ids = [cfg.class_names.index(name) for name in names]

    input_size = onnx_input_size(onnx_session(args.model, threads=1))
    train_images = build_dataset_at_size(cfg.data.train, input_size, cfg.class_names, mode="val")
    reader = calibration_reader(args.model, train_images, args.calib)
    out = quantize_onnx(args.model, args.out, reader, keep_head_output_fp32=args.head_fp32)
    int8_bytes = initializer_bytes(out).get("INT8", 0)
    print(f"calibrated on {len(reader)} training images at {input_size[0]}x{input_size[1]}"
          f"{'; head output convs kept in fp32' if args.head_fp32 else ''}")
    print(describe_size(args.model))
    print(describe_size(out))
    print(f"int8 weights: {int8_bytes:,} B ({int8_bytes / 2**20:.2f} MiB)")
    results = {"int8_weight_bytes": int8_bytes, "int8_file_bytes": out.stat().st_size}
    if args.no_eval:
        return write_json(results, args.json)

    val = build_dataset_at_size(cfg.data.val, input_size, cfg.class_names)
    if args.val_images:
        val = val.with_records(val.records[:args.val_images])
    evaluator = build_evaluator(cfg.evaluator, val)
    head = build_head(cfg.model.arch.head)
    key = cfg.evaluator.save_key
    for name, path in (("fp32", args.model), ("int8", out)):
        metrics = evaluate_onnx(path, head, val, evaluator, num_workers=cfg.device.workers_per_gpu,
                                class_ids=class_ids)
        results[name] = metrics
        scored = f", {len(class_ids)} classes" if class_ids is not None else ""
        print(f"{name}: {cfg.evaluator.name} {key} {metrics[key]:.4f} on {len(val)} val images{scored}")
    print(f"int8 - fp32: {100 * (results['int8'][key] - results['fp32'][key]):+.2f} points of {key}")
    return write_json(results, args.json)


def write_json(results: dict[str, Any], path: str | None) -> dict[str, Any]:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, results)
    return results


def cli() -> None:
    """The command ``nanodet-quantize``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
