"""Lightning DDP on the CPU (gloo): a 2-task Latent Distillation sequence in 2 processes.

The entry point is run as a user would (``--device cpu:2``): Lightning's launcher re-runs the
command for rank 1, both ranks train every task together, and only rank 0 writes the run
directory, evaluates and reports.
"""

import json
import os
import subprocess
import sys

import pytest

from fixtures_continual import ROOT, TINY, TWO_TASKS


@pytest.mark.parametrize("entry", ["latentDistillation.py", "replay.py"])
def test_a_two_task_run_under_ddp_on_two_cpu_processes(tmp_path, entry):
    data, run = tmp_path / "data", tmp_path / "run"
    command = [
        sys.executable, str(ROOT / entry), "--task", TWO_TASKS, "--cfg", str(ROOT / "cfg/demo.yml"),
        "--device", "cpu:2", "--out", str(run), "--no-progress-bar",
        "--set", f"data.train.root={data}", "--set", f"data.val.root={data}",
        "--set", f"data.train.synthetic={TINY}", "--set", f"data.val.synthetic={TINY}",
        "--set", "data.train.input_size=[128, 128]", "--set", "data.val.input_size=[128, 128]",
        "--set", "device.workers_per_gpu=0", "--set", "device.batchsize_per_gpu=4",
        "--set", "schedule.total_epochs=1", "--set", "schedule.lr_schedule.T_max=1", "--set", "schedule.warmup.steps=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output  # two processes joined the process group
    results = json.loads((run / "results.json").read_text())
    assert results["finished"] and [t["task"] for t in results["per_task"]] == [0, 1]
    second = results["per_task"][1]
    assert second["epochs"] == 1 and second["train_img_per_s"] > 0
    if entry == "latentDistillation.py":  # the backbone froze at task 1
        assert second["trainable_parameters"] < results["per_task"][0]["trainable_parameters"]
    else:  # the buffer, filled on every rank alike, was written once by rank 0
        assert (run / "task_0" / "buffer.json").is_file() and second["buffer_bytes"] > 0
    for t in (0, 1):
        assert (run / f"task_{t}" / "model.pth").is_file() and (run / f"task_{t}" / "done.json").is_file()
    # One log, written by rank 0 only: each task is announced once.
    log = (run / "run.log").read_text()
    assert log.count("task 1/1:") == 1


def test_replay_batches_are_split_between_ranks_without_overlap(monkeypatch):
    from nanodet.continual.methods import buffer

    def epoch_for(rank, world):
        monkeypatch.setattr(buffer, "distributed_rank", lambda: (rank, world))
        sampler = buffer.ReplayBatchSampler(num_current=40, num_buffer=6, batch_size=8, seed=3)
        return len(sampler), list(sampler)

    full_len, full = epoch_for(0, 1)
    (len0, rank0), (len1, rank1) = epoch_for(0, 2), epoch_for(1, 2)
    assert len0 == len1 == len(rank0) == len(rank1) == full_len // 2
    assert sorted(rank0 + rank1) == sorted(full)  # the single-process epoch, dealt out
    current = [i for batch in rank0 + rank1 for i in batch if i < 40]
    assert len(current) == len(set(current))  # each current image once, on one rank
    # A tiny epoch (one batch) still gives every rank a batch, so DDP steps stay in step.
    monkeypatch.setattr(buffer, "distributed_rank", lambda: (1, 2))
    assert len(list(buffer.ReplayBatchSampler(4, 2, 8, seed=0))) == 1
