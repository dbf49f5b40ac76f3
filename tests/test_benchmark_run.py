"""tools/benchmark_run.py: the command a user types, and the reference's extrapolation."""

import sys

import pytest

from fixtures_tools import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("benchmark_run")


def test_the_command_is_the_entry_point_with_the_paths_settings(tool, tmp_path):
    args = tool.main.__globals__["argparse"].Namespace(method="latent_replay", task="15p1", config="cfg/demo.yml",
                                                      seed=1, device="cpu", overrides=["device.workers_per_gpu=0"],
                                                      timeout=None)
    cmd = tool.command(args, tmp_path, 7, tool.REFERENCE)
    assert cmd[0] == sys.executable and cmd[1].endswith("replay.py") and "--latent" in cmd
    assert cmd[2] == "cfg/demo.yml"  # the config first, as a user types it
    sets = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--set"]
    assert sets[:len(tool.REFERENCE)] == tool.REFERENCE  # the user's overrides come after, and win
    assert {"device.workers_per_gpu=0", "schedule.total_epochs=7", "schedule.lr_schedule.T_max=7"} <= set(sets)


def run_record(epochs, train_seconds, wall):
    tasks = [{"epochs": epochs, "startup_seconds": 1.0, "warmup_seconds": 0.5, "train_seconds": s, "eval_seconds": 2.0}
             for s in train_seconds]
    parts = ("startup_seconds", "warmup_seconds", "train_seconds", "eval_seconds")
    totals = {k: sum(t[k] for t in tasks) for k in parts}
    return {"epochs_per_task": epochs, "tasks": tasks, "totals": totals, "wall_seconds": wall}


def test_the_reference_is_scaled_by_epochs_and_keeps_what_it_pays_once(tool):
    reference = run_record(1, [10.0, 2.0], wall=30.0)  # 6 s of start-up and evaluation, 12 of training, 12 outside
    fast = run_record(100, [50.0, 10.0], wall=80.0)
    extrapolated = tool.extrapolate(reference, fast)
    assert extrapolated["wall_seconds"] == pytest.approx(6 + 1200 + 12)
    assert "extrapolated from 1 epoch(s) per task to 100" in extrapolated["how"]


def test_a_failed_run_stops_with_its_log(tool, tmp_path):
    args = tool.main.__globals__["argparse"].Namespace(method="naive", task="15p1", config="cfg/no_such.yml", seed=1,
                                                      device="cpu", overrides=[], timeout=None)
    with pytest.raises(SystemExit, match="fast run failed .*fast.log"):
        tool.timed_run(args, "fast", 1, tool.FAST, tmp_path)
    assert (tmp_path / "fast.log").read_text()


def test_a_run_stopped_by_the_timeout_keeps_the_tasks_it_finished(tool, tmp_path, monkeypatch):
    """A stand-in entry point that writes one task's results, then hangs: the record keeps it."""
    script = tmp_path / "entry.py"
    script.write_text(
        "import json, sys, time, pathlib\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1]); out.mkdir(parents=True, exist_ok=True)\n"
        "task = {'task': 0, 'train_images': 5, 'epochs': 1, 'startup_seconds': 0.1, 'warmup_seconds': 0.1,\n"
        "        'train_seconds': 1.0, 'eval_seconds': 0.2, 'train_img_per_s': 5.0, 'mAP': 0.5, 'voc_mAP50': 0.6}\n"
        "(out / 'results.json').write_text(json.dumps({'per_task': [task], 'finished': False,\n"
        "    'epochs_per_task': 1, 'final': {'mAP': 0.5}}))\n"
        "time.sleep(60)\n")
    monkeypatch.setitem(tool.ENTRY_POINTS, "naive", str(script))
    args = tool.main.__globals__["argparse"].Namespace(method="naive", task="15p1", config="cfg/demo.yml", seed=1,
                                                      device=None, overrides=[], timeout=3)
    record = tool.timed_run(args, "fast", 1, tool.FAST, tmp_path)
    assert not record["finished"] and [t["task"] for t in record["tasks"]] == [0]
    assert record["wall_seconds"] < 30
