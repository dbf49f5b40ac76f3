"""Convert an exported detector to LiteRT (TFLite), float32 and int8, and check it against the ONNX model.

    python tools/convert_tflite.py cfg/synthetic.yml --model workspace/synthetic/nanodet.onnx \
        --out workspace/synthetic/tflite [--calib 200] [--check-images 20] [--no-eval]
    nanodet-convert-tflite cfg/synthetic.yml ...   # the same, from any directory

Needs TensorFlow and onnx2tf (``pip install ".[tflite-convert]"``); runs offline. Writes
``<name>_float32.tflite``, ``<name>_int8.tflite`` (int8 inside, float input and output) and
``<name>_int8_io.tflite`` (int8 input and output too, as a microcontroller runs it), the int8
ones calibrated on --calib training images through the val pipeline. Then, on --check-images val
images, the largest output difference of each against the ONNX model and the share of the ONNX
model's detections (score >= 0.3) that each finds again (same class, IoU >= 0.5); and the
evaluator's metrics of the ONNX model and of each LiteRT model on the val set, all
post-processed by the PyTorch head. The model must be a raw-output export (no --decode).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nanodet.deploy.onnx_eval import (build_dataset_at_size, fixed_size_batches, onnx_input_size, onnx_session,
                                      predict_raw, raw_output_to_preds, spread_indices)
from nanodet.deploy.tflite import TFLiteModel, convert_to_tflite
from nanodet.evaluator import build_evaluator
from nanodet.model.head import build_head
from nanodet.util.cli import add_config_arg, add_config_override_arg, config_from_args, parse_args, run_main

MATCH_SCORE, MATCH_IOU = 0.3, 0.5


def detections_found_again(head, reference: np.ndarray, other: np.ndarray, batch: dict) -> tuple[int, int]:
    """(detections of ``reference`` scoring >= MATCH_SCORE, of those ``other`` has too: same class,
    IoU >= MATCH_IOU, score >= MATCH_SCORE / 2)."""
    from torchvision.ops import box_iou

    found = []
    for output, threshold in ((reference, MATCH_SCORE), (other, MATCH_SCORE / 2)):
        (dets,) = head.post_process(raw_output_to_preds(output, head.num_classes), batch).values()
        found.append({label: np.asarray([b for b in boxes if b[4] >= threshold]).reshape(-1, 5)
                      for label, boxes in dets.items()})
    total = matched = 0
    for label, boxes in found[0].items():
        total += len(boxes)
        theirs = found[1].get(label, np.zeros((0, 5)))
        if len(boxes) and len(theirs):
            iou = box_iou(torch.as_tensor(boxes[:, :4]), torch.as_tensor(theirs[:, :4]))
            matched += int((iou.max(dim=1).values >= MATCH_IOU).sum())
    return total, matched


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--model", required=True, help="fp32 ONNX model (tools/export_onnx.py, raw output)")
    parser.add_argument("--out", required=True, help="folder for the .tflite files")
    parser.add_argument("--calib", type=int, default=200, help="training images to calibrate the int8 models on")
    parser.add_argument("--check-images", type=int, default=20, help="val images to compare the outputs on")
    parser.add_argument("--no-eval", action="store_true", help="skip the metrics on the val set")
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    if not Path(args.model).is_file():
        raise SystemExit(f"error: {args.model}: no such ONNX model")
    session = onnx_session(args.model)
    input_size = onnx_input_size(session)
    head = build_head(cfg.model.arch.head)
    train = build_dataset_at_size(cfg.data.train, input_size, cfg.class_names)
    calibration = np.stack([b["img"][0].numpy().transpose(1, 2, 0) for b in
                            fixed_size_batches(train, input_size, spread_indices(len(train), args.calib))])
    try:
        files = convert_to_tflite(args.model, args.out, calibration)
    except RuntimeError as err:
        raise SystemExit(f"error: {err}") from None
    input_name = session.get_inputs()[0].name
    runners = {"onnx": lambda image: session.run(None, {input_name: image})[0],
               **{kind: TFLiteModel(path) for kind, path in files.items()}}
    val = build_dataset_at_size(cfg.data.val, input_size, cfg.class_names)
    report: dict[str, Any] = {"files": {k: str(v) for k, v in files.items()}, "check": {}, "metrics": {}}
    for kind, path in files.items():
        worst, total, matched = 0.0, 0, 0
        for batch in fixed_size_batches(val, input_size, spread_indices(len(val), args.check_images)):
            image = batch["img"].numpy()
            reference, other = runners["onnx"](image), runners[kind](image)
            worst = max(worst, float(np.abs(reference - other).max()))
            counts = detections_found_again(head, reference, other, batch)
            total, matched = total + counts[0], matched + counts[1]
        report["check"][kind] = {"max_abs_difference": worst, "detections": total,
                                 "found_again": matched / total if total else None}
        print(f"{path}: {path.stat().st_size:,} B; on {args.check_images} val images: largest output difference "
              f"{worst:.2e}, {matched} of {total} ONNX detections (score >= {MATCH_SCORE}) found again")
    if not args.no_eval:
        evaluator = build_evaluator(cfg.evaluator, val)
        for kind, run in runners.items():
            metrics = evaluator.evaluate(predict_raw(run, input_size, head, val), save_dir=None)
            report["metrics"][kind] = metrics
            print(f"{kind:8s} mAP {metrics['mAP']:.4f}  AP50 {metrics.get('AP_50', float('nan')):.4f}")
    return report


def cli() -> None:
    """The command ``nanodet-convert-tflite``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
