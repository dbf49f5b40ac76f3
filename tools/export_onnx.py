"""Export a trained detector to ONNX at a fixed input size and check it against PyTorch.

    python tools/export_onnx.py cfg/synthetic.yml --model workspace/synthetic/model_best.ckpt \
        --out workspace/synthetic/nanodet.onnx [--decode | --per-level] [--input-size 320 320] [--opset 13]
    nanodet-export cfg/synthetic.yml ...   # the same, from any directory, after pip install -e .

Output ``output`` [1, N, C + 4 * (reg_max + 1)]: class probabilities, then distance-distribution
logits (upstream's layout); with --decode, ``boxes`` [1, N, 4] (xyxy, input pixels) and
``scores`` [1, N, C] instead; with --per-level, ``level0``... [1, C + 4 * (reg_max + 1), h, w], each
level's raw logits, with nothing after the head's last convolutions (an int8 model is then int8 to
its outputs, as a microcontroller wants). Then runs the ONNX model with onnxruntime and the PyTorch model on
a few val images (val pipeline) and prints the largest absolute difference of their outputs.

It has no ``--device``: the export traces a CPU copy of the model and the check runs onnxruntime's
CPU provider against PyTorch on the CPU (``nanodet/deploy/onnx_export.py``), whatever the machine.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from nanodet.deploy.onnx_eval import build_dataset_at_size, onnx_session
from nanodet.deploy.onnx_export import DEFAULT_OPSET, dataset_images, export_onnx, max_abs_difference
from nanodet.model.arch import build_model
from nanodet.util import get_logger
from nanodet.util.cli import (add_config_arg, add_config_override_arg, config_from_args, parse_args, run_main,
                              with_weights)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--model", default=None,
                        help="checkpoint (.ckpt) or weights (.pth); without it the random initial weights are exported")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--decode", action="store_true", help="output decoded boxes and scores")
    parser.add_argument("--per-level", action="store_true",
                        help="one raw output per level, logits (no fp32 tail: for int8 on a microcontroller)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("W", "H"), default=None,
                        help="input width and height (default: the config's data.val.input_size)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 13 (default {DEFAULT_OPSET})")
    parser.add_argument("--check-images", type=int, default=4,
                        help="val images to compare onnxruntime with PyTorch on (0: no check)")
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    input_size = tuple(args.input_size or cfg.data.val.input_size)

    model = with_weights(build_model(cfg.model), args.model)
    if not args.model:
        get_logger().warning("no --model: exporting the random initial weights")
    try:
        out = export_onnx(model, args.out, input_size, decode=args.decode, opset=args.opset,
                          per_level=args.per_level)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    session = onnx_session(out)
    shapes = ", ".join(f"{port.name} {port.shape}" for port in (*session.get_inputs(), *session.get_outputs()))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, opset {args.opset}): {shapes}")

    max_diff = None
    if args.check_images > 0:
        dataset = build_dataset_at_size(cfg.data.val, input_size, cfg.class_names)
        images = dataset_images(dataset, input_size, args.check_images)
        max_diff = max_abs_difference(model, out, images, decode=args.decode, per_level=args.per_level)
        print(f"onnxruntime vs PyTorch on {len(images)} val images: max abs difference {max_diff:.3g}")
    return {"path": str(out), "max_abs_diff": max_diff}


def cli() -> None:
    """The command ``nanodet-export``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
