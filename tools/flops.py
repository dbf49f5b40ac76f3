"""Parameters and MACs of a config's detector, part by part.

    python tools/flops.py cfg/synthetic.yml [--input-size 320 320] [--device cpu] [--set KEY=VALUE ...]
    nanodet-flops cfg/synthetic.yml ...    # the same, from any directory, after pip install -e .

MACs are counted by PyTorch's FlopCounterMode (convolutions and matrix products; MACs = FLOPs / 2)
for one image at the config's val input size (or --input-size W H). The aux head, when the
config has one, runs at training time only and is listed apart from the inference total. Then,
per continual-learning method, the parameters that train and those held in memory during
training (the student, plus the teacher where the method has one; LD's teacher shares the
student's frozen backbone, so only its neck and head count). The count runs the model once on
``--device`` (the CPU by default; the numbers do not depend on it).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from nanodet.continual.methods import METHODS, TaskContext, build_method
from nanodet.continual.scenario import parse_scenario
from nanodet.model.arch import build_model
from nanodet.model.complexity import INFERENCE_PARTS, model_complexity, sum_parts
from nanodet.trainer.builders import inference_device
from nanodet.util import CfgNode
from nanodet.util.cli import (add_config_arg, add_config_override_arg, add_device_arg, config_from_args, parse_args,
                              run_main)

PART_LABELS = {"backbone": "backbone", "fpn": "neck (fpn)", "head": "head",
               "aux_fpn": "aux neck (training only)", "aux_head": "aux head (training only)"}


def format_table(complexity: dict[str, dict[str, int]]) -> str:
    rows = [(PART_LABELS.get(part, part), entry) for part, entry in complexity.items()]
    inference = sum_parts(complexity, INFERENCE_PARTS)
    rows.append(("inference total", inference))
    neck_head = sum_parts(complexity, ("fpn", "head"))
    rows.append(("  of which neck + head", neck_head))
    if len(complexity) > len([p for p in INFERENCE_PARTS if p in complexity]):
        rows.append(("training total (with aux)", sum_parts(complexity)))
    width = max(len(label) for label, _ in rows)
    lines = [f"{'part':<{width}}  {'params':>10}  {'trainable':>10}  {'GMACs':>8}"]
    for label, entry in rows:
        lines.append(f"{label:<{width}}  {entry['params']:>10,}  {entry['trainable_params']:>10,}  "
                     f"{entry['macs'] / 1e9:>8.4f}")
    return "\n".join(lines)


def method_footprints(cfg: CfgNode) -> list[tuple[str, int, int]]:
    """Per continual-learning method, at a task with a teacher (task 1 of an XpY scenario):
    parameters that train, and parameters held in memory (student plus teacher)."""
    scenario = parse_scenario(f"{len(cfg.class_names) - 1}p1", cfg.class_names)
    rows = []
    for name in METHODS:
        model = build_model(cfg.model)
        method = build_method(name)
        method.on_task_start(TaskContext(1, scenario, cfg), model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append((name, trainable, method.parameters_in_memory(model)))
    return rows


def format_methods(rows: Sequence[tuple[str, int, int]]) -> str:
    lines = ["", "continual-learning methods at a task >= 1 (replay buffers not included):",
             f"{'method':<14}  {'trainable':>10}  {'in memory':>10}"]
    lines += [f"{name:<14}  {trainable:>10,}  {memory:>10,}" for name, trainable, memory in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser)
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("W", "H"), default=None,
                        help="input width and height (default: the config's data.val.input_size)")
    add_device_arg(parser, default="cpu", one_device=True)
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    input_size = tuple(args.input_size or cfg.data.val.input_size)
    device = inference_device(args.device or "cpu")
    complexity = model_complexity(build_model(cfg.model).to(device), input_size)
    print(f"{args.config} at {input_size[0]}x{input_size[1]} (MACs counted by "
          "torch.utils.flop_counter: convolutions and matrix products)")
    print(format_table(complexity))
    print(format_methods(method_footprints(cfg)))
    return complexity


def cli() -> None:
    """The command ``nanodet-flops``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
