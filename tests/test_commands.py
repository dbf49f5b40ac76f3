"""The tools as commands: pyproject.toml's packages and console scripts, and one ``--device``."""

import argparse
import importlib
from pathlib import Path

import pytest

from fixtures_tools import load_tool
from nanodet.util.cli import DeviceRequest, add_device_arg, parse_args, parse_device, run_main

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem != "__init__")


def pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_package_and_maps_the_tools():
    setuptools = pyproject()["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nanodet").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"nanodet.tools"}
    assert setuptools["package-dir"] == {"nanodet.tools": "tools"}


def test_every_console_script_is_a_tools_cli_and_every_tool_has_one():
    scripts = pyproject()["project"]["scripts"]
    targets = {}
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert name.startswith("nanodet-") and module.startswith("nanodet.tools.") and attr == "cli", target
        assert callable(getattr(importlib.import_module(module), attr)), target
        targets[module.rsplit(".", 1)[1]] = name
    assert sorted(targets) == TOOLS
    for tool in TOOLS:
        assert callable(load_tool(tool).main), tool


def test_device_is_read_once_for_every_command():
    assert parse_device(None) is None
    assert parse_device(" CUDA ") == DeviceRequest("cuda")
    assert parse_device("cuda:0,1") == DeviceRequest("cuda", (0, 1))
    assert parse_device("gpu:2") == DeviceRequest("cuda", (2,))
    assert parse_device("cpu") == DeviceRequest("cpu") and parse_device("cpu:3") == DeviceRequest("cpu", processes=3)
    for bad in ("tpu", "cuda:", "cuda:a", "cuda:-1", "cuda:0,,1", "cpu:0"):
        with pytest.raises(ValueError, match=f"^--device '{bad}': expected"):
            parse_device(bad)


def test_a_bad_device_is_one_line_naming_the_flag_and_the_value():
    parser = argparse.ArgumentParser()
    add_device_arg(parser, one_device=True)
    assert parse_args(parser, ["--device", "cuda:0,1"]).device == "cuda:0,1"
    assert not hasattr(parse_args(parser, []), "device_arg")
    with pytest.raises(ValueError, match="--device 'tpu'"):
        parse_args(parser, ["--device", "tpu"])
    for tool in ("train", "test", "inference", "flops", "benchmark", "benchmark_run", "step_ceiling"):
        args = ["cfg/demo.yml", "--device", "tpu"] + (["--model", "m.pth"] if tool in ("test", "inference") else [])
        args += ["--path", "x", "--save-dir", "y"] if tool == "inference" else []
        with pytest.raises(SystemExit, match=r"^error: --device 'tpu': expected cpu, cpu:N, cuda, cuda:0 or cuda:0,1$"):
            run_main(load_tool(tool).main, args)


def test_a_bad_device_stops_an_entry_point_in_one_line_before_anything_runs(tmp_path):
    from nanodet.continual.cli import main

    with pytest.raises(SystemExit, match=r"^error: --device 'tpu': expected cpu, cpu:N, cuda, cuda:0 or cuda:0,1$"):
        main("naive", ["cfg/demo.yml", "--task", "15p1", "--device", "tpu", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
