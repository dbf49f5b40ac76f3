"""Every command takes its config first (``cfg/VOC.yml``) or as ``--cfg`` (the original scripts')."""

import argparse
import subprocess
import sys

import pytest

from fixtures_continual import ROOT
from nanodet.util.cli import add_config_arg, parse_args


def parser(default=None):
    p = argparse.ArgumentParser(prog="tool")
    add_config_arg(p, default=default)
    p.add_argument("--task")
    return p


def test_the_config_comes_first_or_as_cfg_or_from_the_default():
    assert parse_args(parser(), ["cfg/a.yml", "--task", "15p1"]).config == "cfg/a.yml"
    assert parse_args(parser(), ["--task", "15p1", "--cfg", "cfg/a.yml"]).config == "cfg/a.yml"
    assert parse_args(parser(), ["cfg/a.yml", "--cfg", "cfg/a.yml"]).config == "cfg/a.yml"
    assert parse_args(parser("cfg/synthetic.yml"), []).config == "cfg/synthetic.yml"
    assert not hasattr(parse_args(parser(), ["cfg/a.yml"]), "config_flag")


def test_no_config_or_two_configs_are_one_line_errors(capsys):
    with pytest.raises(SystemExit):
        parse_args(parser(), ["--task", "15p1"])
    assert "a config file is needed: give it first (e.g. cfg/VOC.yml) or with --cfg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(parser(), ["cfg/a.yml", "--cfg", "cfg/b.yml"])
    assert "two config files: cfg/a.yml and --cfg cfg/b.yml" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["naive.py"], ["tools/train.py"], ["tools/flops.py"], ["tools/benchmark.py"],
                                     ["tools/step_ceiling.py"]])
def test_every_command_offers_both_forms(command):
    out = subprocess.run([sys.executable, str(ROOT / command[0]), "-h"], capture_output=True, text=True, check=True)
    usage = " ".join(out.stdout.split())
    assert "[config]" in usage and "--cfg CONFIG" in usage
