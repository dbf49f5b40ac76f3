"""Does an exported model fit a microcontroller? Its flash and activation arena, and a verdict per part.

    python tools/fit_report.py workspace/synthetic/nanodet_int8.onnx \
        [--target NAME:FLASH_KIB:RAM_KIB[:LARGEST_REGION_KIB]] [--no-inplace] [--json OUT.json]
    nanodet-fit-report MODEL.onnx ...   # the same, from any directory, after pip install -e .

For an ONNX model (fp32, or the int8 QDQ model of tools/quantize.py) it prints, in KiB (1024
bytes): the flash an MCU runtime stores, by kind (int8 weights, int32 biases, quantisation
parameters, fp32 weights, and an estimate of the graph description); the activation arena as an
int8 runtime (TFLite Micro, STM32Cube.AI) holds it, with and without ops running in place: the
peak of live bytes over the best execution order found, the arena TFLite Micro's greedy planner
would lay out, and the best of a few placement orders; the tensors live at the peak; and, per
target part, whether the flash fits and whether the arena fits its largest contiguous RAM block,
only its whole RAM split across regions, or not at all. --target adds a part to the STM32H743,
STM32H747 and STM32F767 (the largest region defaults to the whole RAM). The verdicts use the arena
with in-place ops, or without them with --no-inplace. The model is only parsed, never run. Not
counted: the runtime's code and its scratch buffers (im2col), the stack and the application's
buffers (nanodet/deploy/mcu_fit.py says how each figure is counted).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from nanodet.deploy.mcu_fit import DEFAULT_SEARCH_STATES, KIB, TARGETS, fit_report, parse_target
from nanodet.util.cli import run_main

FLASH_ROWS = (("int8_weights", "int8 weights"), ("int32_biases", "int32 biases"),
              ("quant_params", "quantisation parameters"), ("float_weights", "fp32 weights and constants"),
              ("graph_estimate", "graph description (estimate)"), ("total", "total"),
              ("tensors", "  of which stored tensors"))
NAME_WIDTH = 56


def kib(nbytes: float) -> str:
    return f"{nbytes / KIB:,.1f}"


def short(name: str, width: int = NAME_WIDTH) -> str:
    """A tensor or op name cut from the left to ``width`` characters (its end says the most)."""
    return name if len(name) <= width else "..." + name[-(width - 3):]


def print_arena(ram: dict[str, dict]) -> None:
    modes = (ram["inplace"], ram["no_inplace"])
    print(f"\narena (activations), KiB {'in place':>22} {'no in place':>14}")
    rows = (("peak of live bytes", "peak_live_bytes"), ("planned (TFLite Micro greedy)", "planned_arena_bytes"),
            ("best of 4 placement orders", "best_plan_bytes"))
    for label, key in rows:
        print(f"  {label:<34} {kib(modes[0][key]):>14} {kib(modes[1][key]):>14}")
    for mode in modes:
        print(f"  {'in place' if mode['inplace'] else 'no in place'}: order by {mode['found_by']}; "
              f"exact search {mode['exact_search']}; best plan: {mode['best_plan_placement']}")


def print_peak(summary: dict) -> None:
    op = summary["peak_op"]
    print(f"\npeak ({'in place' if summary['inplace'] else 'no in place'}): at op {summary['peak_step'] + 1} of "
          f"{summary['steps']}, {short(op['name'])} ({op['op_type']}, {op['kernel']}); live there:")
    print(f"  {'tensor':<{NAME_WIDTH}} {'shape':<16} {'dtype':<8} {'KiB':>9}  producer")
    for row in summary["live_at_peak"]:
        shape = "x".join(str(d) for d in row["shape"])
        note = f"  ({row['note']})" if "note" in row else ""
        print(f"  {short(row['tensor']):<{NAME_WIDTH}} {shape:<16} {row['dtype']:<8} {kib(row['bytes']):>9}  "
              f"{short(row['producer'], 40)}{note}")
    highest = sorted(summary["timeline"], key=lambda step: -step["live_bytes"])[:5]
    print("  ops with the most live bytes: " + "; ".join(f"{short(step['op'], 40)} ({step['op_type']}) "
                                                         f"{kib(step['live_bytes'])}" for step in highest))


def print_verdicts(report: dict[str, Any]) -> None:
    mode = "in place" if report["verdict_on"] == "inplace" else "no in place"
    print(f"\nverdicts (arena: TFLite Micro's plan, {mode}; in brackets the best plan's)")
    print(f"  {'target':<24} {'flash needed / available':>26} {'arena / RAM (largest region)':>32}  verdict")
    for target in report["targets"]:
        flash = f"{kib(target['flash_needed_kib'] * KIB)} / {target['flash_kib']:,.0f}"
        ram = f"{target['arena_kib']:,.1f} / {target['ram_kib']:,.0f} ({target['largest_region_kib']:,.0f})"
        best = f" [{target['best_arena_kib']:,.1f}: {target['verdict_best_plan']}]"
        print(f"  {target['target']:<24} {flash:>26} {ram:>32}  {target['verdict']}{best}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="ONNX model (tools/export_onnx.py, or tools/quantize.py's int8 model)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME:FLASH_KIB:RAM_KIB[:LARGEST_REGION_KIB]",
                        help="another part to judge against (repeatable)")
    parser.add_argument("--no-inplace", action="store_true",
                        help="judge on the arena without ops writing into their inputs (both are printed)")
    parser.add_argument("--json", default=None, metavar="OUT.json",
                        help="also write the whole report, per-op timeline included")
    parser.add_argument("--search-states", type=int, default=DEFAULT_SEARCH_STATES,
                        help=f"states the exact order search may visit (default {DEFAULT_SEARCH_STATES:,})")
    args = parser.parse_args(argv)
    targets = list(TARGETS) + [parse_target(text) for text in args.target]

    report = fit_report(args.model, targets, inplace=not args.no_inplace, max_states=args.search_states)
    (model_input,) = report["input"][:1] or [None]
    shape = "x".join(str(d) for d in model_input["shape"]) if model_input else "-"
    print(f"{report['model']}: {report['kind']}, {report['ops']} ops ({report['int8_ops']} int8 kernels); "
          f"input {shape} {model_input['dtype'] if model_input else ''}. Sizes in KiB (1 KiB = 1024 bytes)")
    print("\nflash, KiB")
    for key, label in FLASH_ROWS:
        print(f"  {label:<34} {kib(report['flash'][key]):>14}")
    print_arena(report["ram"])
    print_peak(report["ram"][report["verdict_on"]])
    print_verdicts(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return report


def cli() -> None:
    """The command ``nanodet-fit-report``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
