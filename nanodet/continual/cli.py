"""The command line shared by every continual-learning entry point (naive.py, lwf.py, ...)."""

from __future__ import annotations

import argparse

from ..util.cli import USER_ERRORS, add_config_override_arg, config_from_args, describe_error, is_user_error
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
    parser.add_argument("--restart", action="store_true",
                        help="discard the run directory's finished tasks and start over")
    parser.add_argument("--handover", choices=("last", "best"), default="last",
                        help="weights handed to the next task: the last epoch's (the paper) or the best on validation")
    parser.add_argument("--base-model", default=None, metavar="MODEL_PTH",
                        help="take task 0 from this model (e.g. another run's task_0/model.pth) instead of "
                             "training it, so that every method starts from the same base model")
    parser.add_argument("--no-progress-bar", action="store_true", help="no per-batch progress bar (logs only)")
    add_config_override_arg(parser)
    return parser


# Method options: flag -> (setting name, argparse keywords). Every entry point takes the common
# ones; each names the others it uses, so a flag a method ignores is an error, not a no-op.
COMMON_OPTIONS = ("--pseudo-labels", "--drop-background")
OPTIONS = {
    "--alpha": ("alpha", dict(type=float, default=1.0, help="weight of logit distillation (default 1)")),
    "--beta": ("beta", dict(type=float, default=1.0, help="weight of feature distillation (default 1)")),
    "--buffer-size": ("buffer_size", dict(type=int, default=250, help="images in the replay buffer (default 250)")),
    "--buffer-policy": ("buffer_policy", dict(choices=("random", "balanced"), default="random",
                                              help="random (the paper's) or class-balanced")),
    "--latent-dtype": ("latent_dtype", dict(choices=("fp16", "int8"), default="fp16",
                                            help="storage of Latent Replay's feature maps (default fp16)")),
    "--freeze-backbone-from": ("freeze_backbone_from", dict(
        type=int, default=None, help="task from which the backbone is frozen (default: 0 with pretrained "
                                     "backbone weights, else 1)")),
    "--pseudo-labels": ("pseudo_labels", dict(
        type=float, default=None, metavar="SCORE",
        help="add the teacher's old-class detections scoring above SCORE to new-task images")),
    "--drop-background": ("drop_background", dict(
        action="store_true", help="at tasks >= 1, drop the background term of the classification loss")),
}


def main(method: str, argv=None, description: str = "", options=(), method_for_args=None):
    """Parse the shared flags and ``options`` (keys of OPTIONS), then run the task sequence.

    ``method_for_args(args)`` may pick the method's name from the flags (replay.py --latent).
    """
    parser = build_parser(method, description)
    for flag in (*options, *COMMON_OPTIONS):
        parser.add_argument(flag, dest=OPTIONS[flag][0], **OPTIONS[flag][1])
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback, not one line")
    if method_for_args:
        parser.add_argument("--latent", action="store_true",
                            help="Latent Replay: store frozen-backbone feature maps instead of images")
    args = parser.parse_args(argv)
    if method_for_args:
        method = method_for_args(args)
    try:
        cfg = config_from_args(args.cfg, args)
        scenario = parse_scenario(args.task, cfg.class_names)
        settings = {OPTIONS[flag][0]: getattr(args, OPTIONS[flag][0]) for flag in (*options, *COMMON_OPTIONS)}
        if method == "replay":
            settings.pop("latent_dtype", None)
            settings.pop("freeze_backbone_from", None)
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
