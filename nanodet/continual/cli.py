"""The command line shared by every continual-learning entry point (naive.py, lwf.py, ...)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..util.cli import (USER_ERRORS, add_config_arg, add_config_override_arg, add_device_arg, config_from_args,
                        describe_error, is_user_error, parse_args)
from .methods import METHODS, build_method
from .methods.settings import add_flags, values_for
from .runner import ContinualRunner, RunError
from .scenario import ScenarioError, parse_scenario


def build_parser(method: str, description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description or f"Continual learning with {method}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True,
                        help="scenario: 15p5, 10p10, 19p1, 15p1, any XpY, joint, a YAML file of "
                             "class-name lists, or an inline list like '[[cat, dog], [car]]'")
    add_config_arg(parser, example="cfg/VOC.yml or cfg/demo.yml")
    parser.add_argument("--out", default=None, help="run directory (default runs/<config>/<scenario>/<method>)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default 1234, the paper's)")
    add_device_arg(parser)
    parser.add_argument("--restart", action="store_true",
                        help="discard the run directory's finished tasks and start over")
    parser.add_argument("--handover", choices=("last", "best"), default="last",
                        help="weights handed to the next task: the last epoch's (the paper) or the best on held-out "
                             "training images (data.validation_fraction, default 0.1; never the test split)")
    parser.add_argument("--base-model", default=None, metavar="MODEL_PTH",
                        help="take task 0 from this model (e.g. another run's task_0/model.pth) instead of "
                             "training it, so that every method starts from the same base model")
    parser.add_argument("--no-progress-bar", action="store_true", help="no per-batch progress bar (logs only)")
    add_config_override_arg(parser)
    return parser


def main(method: str, argv: Sequence[str] | None = None, description: str = "",
         variants: dict[str, tuple[str, str]] | None = None) -> dict:
    """Parse the shared flags and the method's settings' flags (declared with its settings,
    ``methods/settings.py``), then run the task sequence.

    ``variants`` maps a switch to another method this entry point also runs and the switch's
    help (replay.py: ``{"latent": ("latent_replay", "...")}``); its settings' flags are offered
    too, and a flag of the method not chosen is an error.
    """
    variants = variants or {}
    parser = build_parser(method, description)
    offered = add_flags(parser, [METHODS[name].Settings for name in (method, *(v[0] for v in variants.values()))])
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback, not one line")
    for switch, (_, help_text) in variants.items():
        parser.add_argument(f"--{switch}", action="store_true", help=help_text)
    try:
        args = parse_args(parser, argv)
    except ValueError as err:  # a bad --device: one line, before anything runs
        raise SystemExit(f"error: {err}") from None
    method = next((name for switch, (name, _) in variants.items() if getattr(args, switch)), method)
    try:
        cfg = config_from_args(args.config, args)
        scenario = parse_scenario(args.task, cfg.class_names)
        settings = values_for(METHODS[method].Settings, args, offered, method)
        runner = ContinualRunner(
            cfg, scenario, build_method(method, **settings), run_dir=args.out, seed=args.seed,
            device=args.device, restart=args.restart, handover=args.handover,
            progress_bar=not args.no_progress_bar, base_model=args.base_model,
        )
        return runner.run()
    except (*USER_ERRORS, ScenarioError, RunError, OSError, RuntimeError) as err:
        if args.debug or not is_user_error(err, (ScenarioError, RunError)):
            raise
        raise SystemExit(f"error: {describe_error(err)}") from None
