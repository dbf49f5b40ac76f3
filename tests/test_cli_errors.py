"""A user's mistake ends a command with one `error:` line naming the file, key or value;
`--debug` keeps the traceback."""

import errno

import pytest

from nanodet.util import CheckpointError
from nanodet.util.cli import run_main
from fixtures_tools import load_tool


def test_a_tools_config_error_is_one_line_naming_the_file():
    with pytest.raises(SystemExit, match=r"^error: config file not found: cfg/no_such\.yml$"):
        run_main(load_tool("test").main, ["cfg/no_such.yml", "--model", "m.pth"])


def test_a_missing_checkpoint_is_one_line():
    with pytest.raises(SystemExit, match=r"^error: checkpoint not found: .*nothing\.pth$"):
        run_main(load_tool("test").main, ["cfg/demo.yml", "--model", "nothing.pth"])


def test_debug_shows_the_exception_itself():
    from nanodet.util import ConfigError

    with pytest.raises(ConfigError, match="config file not found"):
        run_main(load_tool("test").main, ["cfg/no_such.yml", "--model", "m.pth", "--debug"])


def test_a_refused_checkpoint_raised_inside_a_command_is_one_line(tmp_path):
    def load(argv):
        raise CheckpointError(f"{tmp_path / 'evil.pth'}: refused: this checkpoint holds Python objects")

    with pytest.raises(SystemExit, match=r"^error: .*evil\.pth: refused"):
        run_main(load, [])


def test_a_full_disk_says_so_and_other_system_errors_keep_their_traceback():
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/model.pth")

    with pytest.raises(SystemExit, match="no space left on the device writing runs/x/model.pth"):
        run_main(full, [])

    def checkpoint_cut_short(argv):  # what torch.save raises when the disk fills during a write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2368 vs 2256")

    with pytest.raises(SystemExit, match=r"^error: writing a file failed, most likely for want of disk space"):
        run_main(checkpoint_cut_short, [])

    def bug(argv):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # not a user's mistake: the traceback
        run_main(bug, [])

    def broken_pipe(argv):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        run_main(broken_pipe, [])


def test_a_continual_entry_points_checkpoint_error_is_one_line(tmp_path):
    from nanodet.continual.cli import main

    with pytest.raises(SystemExit, match=r"^error: --base-model .*missing\.pth: no such file"):
        main("naive", ["--task", "15p1", "--cfg", "cfg/demo.yml", "--base-model", str(tmp_path / "missing.pth"),
                       "--out", str(tmp_path / "run")])


def test_evaluation_and_inference_read_device_as_training_does(monkeypatch, caplog):
    # tools/test.py and tools/inference.py passed "cuda:0,1" straight to torch.device, which fails.
    import torch

    from nanodet.trainer.builders import inference_device
    from nanodet.util import get_logger

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert inference_device("cuda:0,1") == torch.device("cuda:0")
    assert inference_device("cuda:1") == torch.device("cuda:1")

    monkeypatch.setattr(get_logger(), "propagate", True)  # to caplog
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device("cuda").type == "cpu"
    assert "CUDA is not available" in caplog.text
    with pytest.raises(ValueError, match="--device 'tpu'"):
        inference_device("tpu")


def test_a_training_refused_for_its_data_writes_nothing_and_says_so_in_one_line(synthetic_data, tmp_path):
    # A COCO file whose category names match none of class_names: before, tools/train.py trained
    # a whole run on zero boxes; now it stops before creating its save_dir.
    import json

    data = json.loads(open(synthetic_data.coco_json).read())
    for category in data["categories"]:
        category["name"] = "Category " + category["name"]
    coco = tmp_path / "renamed.json"
    coco.write_text(json.dumps(data))
    node = (f"{{name: CocoDataset, img_path: {synthetic_data.img_dir}, ann_path: {coco}, input_size: [64, 64], "
            "pipeline: {normalize: [[0, 0, 0], [1, 1, 1]]}}")
    overrides = [f"save_dir={tmp_path / 'work'}", f"data.train={node}", f"data.val={node}",
                 f"class_names={synthetic_data.class_names}", "model.arch.head.num_classes=3",
                 "device.gpu_ids=-1"]
    with pytest.raises(SystemExit, match=r"^error: .*renamed\.json: none of its categories .* is in class_names"):
        run_main(load_tool("train").main, ["cfg/demo.yml", *[a for o in overrides for a in ("--set", o)]])
    assert not (tmp_path / "work").exists()
