"""The command line shared by every continual-learning entry point (naive.py, lwf.py, ...)."""

from __future__ import annotations

import argparse

from ..util.cli import add_config_override_arg, config_from_args
from ..util.config import ConfigError
from .methods import build_method
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
    parser.add_argument("--cfg", required=True, help="config file, e.g. cfg/VOC.yml or cfg/demo.yml")
    parser.add_argument("--out", default=None, help="run directory (default runs/<config>/<scenario>/<method>)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default 1234, the paper's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:0 or cuda:0,1 (default: the config's)")
    parser.add_argument("--restart", action="store_true", help="discard the run directory's finished tasks and start over")
    parser.add_argument("--handover", choices=("last", "best"), default="last",
                        help="weights handed to the next task: the last epoch's (the paper) or the best on validation")
    parser.add_argument("--no-progress-bar", action="store_true", help="no per-batch progress bar (logs only)")
    add_config_override_arg(parser)
    return parser


def main(method: str, argv=None, description: str = "", add_method_args=None, method_settings=None):
    parser = build_parser(method, description)
    if add_method_args:
        add_method_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args.cfg, args)
        scenario = parse_scenario(args.task, cfg.class_names)
        settings = method_settings(args) if method_settings else {}
        runner = ContinualRunner(
            cfg, scenario, build_method(method, **settings), run_dir=args.out, seed=args.seed,
            device=args.device, restart=args.restart, handover=args.handover,
            progress_bar=not args.no_progress_bar,
        )
        return runner.run()
    except (ConfigError, ScenarioError, RunError) as err:
        raise SystemExit(f"error: {err}") from None
